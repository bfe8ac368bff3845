/* Layout/version probe: compiled and run by build.rs with the same defines as the shim.
 * Prints the version strings as the headers expand them, and sizes/offsets that the
 * Rust bindings are checked against (build fails on any disagreement). */
#include <stdio.h>
#include <stddef.h>
#include "wrapper.h"
#include "core/ver_defs.h"

#define SZ(T) printf("size %s %zu\n", #T, sizeof(T))
#define OFF(T, F) printf("off %s %s %zu\n", #T, #F, offsetof(T, F))

int main(void)
{
	printf("version %s\n", SER_FULL_VERSION);
	printf("flags %s\n", SER_COMPILE_FLAGS);
	SZ(struct sip_msg);
	OFF(struct sip_msg, new_uri);
	OFF(struct sip_msg, dst_uri);
	OFF(struct sip_msg, rcv);
	OFF(struct sip_msg, force_send_socket);
	OFF(struct sip_msg, first_line);
	OFF(struct sip_msg, callid);
	OFF(struct sip_msg, from);
	OFF(struct sip_msg, to);
	OFF(struct sip_msg, parsed_uri);
	OFF(struct sip_msg, parsed_uri_ok);
	SZ(struct module_exports);
	SZ(cmd_export_t);
	SZ(param_export_t);
	SZ(rpc_export_t);
	SZ(rpc_t);
	OFF(rpc_t, struct_add);
	SZ(gen_lock_t);
	SZ(struct receive_info);
	OFF(struct receive_info, src_ip);
	OFF(struct receive_info, src_port);
	OFF(struct receive_info, proto);
	SZ(struct ip_addr);
	SZ(struct socket_info);
	SZ(sr_shm_api_t);
	SZ(sr_pkg_api_t);
	SZ(struct sip_uri);
	SZ(struct to_body);
	SZ(sr_xavp_t);
	SZ(sr_xval_t);
	SZ(struct hdr_field);
	SZ(fparam_t);
	SZ(pv_spec_t);
	SZ(pv_value_t);
	SZ(struct tm_binds);
	SZ(str);
	return 0;
}
