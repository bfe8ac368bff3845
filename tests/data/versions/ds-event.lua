-- KEMI (app_lua) script for tests/it_versions.rs: the dispatcher's event_callback
-- (ksr_dispatcher_event) logs on which message it runs. Loopback only.
--
-- Test entry points (R-URI user):
--   mki     sets the _dsdst_ record from the headers X-Set and X-Uri, then
--           KSR.dispatcher.ds_mark_dst_state("i"); answers 200 with X-Ret
--   other   404 (the harness probes readiness with OPTIONS sip:probe@...)
-- Each event logs: KEMIEV|<event name>|$ru|$du|$dsv(code)|

local function str(v)
	if v == nil then
		return "<null>"
	end
	return tostring(v)
end

function ksr_request_route()
	local user = KSR.pv.get("$rU") or ""
	if user == "mki" then
		KSR.pv.seti("$xavp(_dsdst_=>grp)", tonumber(KSR.pv.get("$hdr(X-Set)")))
		KSR.pv.sets("$xavp(_dsdst_[0]=>uri)", KSR.pv.get("$hdr(X-Uri)"))
		local ret = KSR.dispatcher.ds_mark_dst_state("i")
		KSR.hdr.append_to_reply("X-Ret: " .. tostring(ret) .. "\r\n")
		KSR.sl.sl_send_reply(200, "marked")
		KSR.x.exit()
	end
	KSR.sl.sl_send_reply(404, "No such test route")
	KSR.x.exit()
end

function ksr_dispatcher_event(evname)
	KSR.log("notice", "KEMIEV|" .. str(evname) .. "|" .. str(KSR.pv.get("$ru")) .. "|"
		.. str(KSR.pv.get("$du")) .. "|" .. str(KSR.pv.get("$dsv(code)")) .. "|\n")
end
