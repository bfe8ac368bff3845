-- KEMI (app_lua) routing script for tests/it_kemi.rs: the dispatcher module used through
-- KSR.dispatcher.* instead of the native cfg functions. Loopback only.
--
-- Test entry points (R-URI user):
--   rr              KSR.dispatcher.ds_select_dst(1, 4), relay; the failure route
--                   "ksr_failure_route" fails over with KSR.dispatcher.ds_next_dst()
--   sel-<set>-<alg> ds_select_dst(set, alg) (X-Limit: n -> ds_select_dst_limit), then
--                   X-Next: n calls of ds_next_dst(); answers 200 "SEL" with X-Ret,
--                   X-DU and one X-Next: "<ret> <du>" per ds_next_dst() call
--   isfrom          ds_is_from_lists() -> X-Ret, X-Setid ($var(setid)), X-Attrs
--   isfrom-<g>      ds_is_from_list(g) -> X-Ret
--   exists-<set>    ds_list_exists(set) -> X-Ret
--   active-<set>    ds_is_active(set) -> X-Ret
--   kemi-names      X-Missing: the dispatcher KEMI exports of 5.6.3 missing from KSR
--   anything else   404 (the harness probes readiness with OPTIONS sip:probe@...)

local DS_EXPORTS = {
	"ds_select", "ds_select_limit", "ds_select_domain", "ds_select_domain_limit",
	"ds_next_domain", "ds_set_domain", "ds_select_dst", "ds_select_dst_limit",
	"ds_select_routes", "ds_select_routes_limit", "ds_next_dst", "ds_set_dst",
	"ds_mark_dst", "ds_mark_dst_state", "ds_is_from_lists", "ds_is_from_list",
	"ds_is_from_list_mode", "ds_is_from_list_uri", "ds_load_update", "ds_load_unset",
	"ds_reload", "ds_list_exists", "ds_is_active", "ds_is_active_uri",
}

local function reply(code, reason, headers)
	for _, h in ipairs(headers or {}) do
		KSR.hdr.append_to_reply(h .. "\r\n")
	end
	KSR.sl.sl_send_reply(code, reason)
	KSR.x.exit()
end

local function relay()
	if KSR.tm.t_relay() < 0 then
		KSR.sl.sl_reply_error()
	end
	KSR.x.exit()
end

local function dispatch()
	if KSR.dispatcher.ds_select_dst(1, 4) < 0 then
		reply(503, "No destination available")
	end
	KSR.info("KEMI DISPATCH " .. KSR.pv.get("$rm") .. " " .. KSR.pv.get("$ci") .. " -> " .. KSR.pv.get("$du") .. "\n")
	if KSR.is_INVITE() then
		KSR.rr.record_route()
	end
	KSR.tm.t_on_failure("ksr_failure_route")
	relay()
end

local function within_dialog()
	if KSR.rr.loose_route() > 0 then
		relay()
	end
	if KSR.is_ACK() then
		if KSR.tm.t_check_trans() > 0 then
			relay()
		end
		KSR.x.exit()
	end
	reply(404, "Not here")
end

function ksr_request_route()
	if KSR.maxfwd.process_maxfwd(10) < 0 then
		reply(483, "Too Many Hops")
	end
	if KSR.siputils.has_totag() > 0 then
		within_dialog()
	end
	if KSR.is_CANCEL() then
		if KSR.tm.t_check_trans() > 0 then
			relay()
		end
		KSR.x.exit()
	end
	-- a retransmitted INVITE must not run a second selection
	if KSR.is_INVITE() and KSR.tm.t_check_trans() == 0 then
		KSR.x.exit()
	end

	local user = KSR.pv.get("$rU") or ""
	if user == "rr" then
		dispatch()
	end

	local set, alg = string.match(user, "^sel%-(%d+)%-(%d+)$")
	if set ~= nil then
		local ret
		local limit = KSR.pv.get("$hdr(X-Limit)")
		if limit ~= nil then
			ret = KSR.dispatcher.ds_select_dst_limit(tonumber(set), tonumber(alg), tonumber(limit))
		else
			ret = KSR.dispatcher.ds_select_dst(tonumber(set), tonumber(alg))
		end
		local hdrs = { "X-Ret: " .. ret, "X-DU: " .. (KSR.pv.get("$du") or "<null>") }
		local n = tonumber(KSR.pv.get("$hdr(X-Next)") or "0")
		for _ = 1, n do
			local r = KSR.dispatcher.ds_next_dst()
			hdrs[#hdrs + 1] = "X-Next: " .. r .. " " .. (KSR.pv.get("$du") or "<null>")
		end
		reply(200, "SEL", hdrs)
	end

	if user == "isfrom" then
		KSR.pv.sets("$var(setid)", "unset")
		KSR.pv.sets("$var(attrs)", "unset")
		local ret = KSR.dispatcher.ds_is_from_lists()
		reply(200, "isfrom", {
			"X-Ret: " .. ret,
			"X-Setid: " .. tostring(KSR.pv.get("$var(setid)")),
			"X-Attrs: " .. tostring(KSR.pv.get("$var(attrs)")),
		})
	end

	local g = string.match(user, "^isfrom%-(%d+)$")
	if g ~= nil then
		reply(200, "isfrom", { "X-Ret: " .. KSR.dispatcher.ds_is_from_list(tonumber(g)) })
	end

	local e = string.match(user, "^exists%-(%d+)$")
	if e ~= nil then
		reply(200, "exists", { "X-Ret: " .. KSR.dispatcher.ds_list_exists(tonumber(e)) })
	end

	local a = string.match(user, "^active%-(%d+)$")
	if a ~= nil then
		reply(200, "active", { "X-Ret: " .. KSR.dispatcher.ds_is_active(tonumber(a)) })
	end

	if user == "kemi-names" then
		local missing = {}
		for _, f in ipairs(DS_EXPORTS) do
			if KSR.dispatcher == nil or type(KSR.dispatcher[f]) ~= "function" then
				missing[#missing + 1] = f
			end
		end
		reply(200, "kemi", { "X-Missing: " .. (#missing > 0 and table.concat(missing, ",") or "none") })
	end

	reply(404, "No such test route")
end

-- failure route: named by the string given to KSR.tm.t_on_failure()
function ksr_failure_route()
	if KSR.tm.t_is_canceled() > 0 then
		return 1
	end
	if KSR.tm.t_check_status("5[0-9][0-9]") > 0 or KSR.tm.t_branch_timeout() > 0 then
		if KSR.dispatcher.ds_next_dst() > 0 then
			KSR.info("KEMI FAILOVER " .. KSR.pv.get("$ci") .. " -> " .. KSR.pv.get("$du") .. "\n")
			KSR.tm.t_on_failure("ksr_failure_route")
			KSR.tm.t_relay()
			return 1
		end
		KSR.info("KEMI FAILOVER " .. KSR.pv.get("$ci") .. ": no destination left\n")
	end
	return 1
end
