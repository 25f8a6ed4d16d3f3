/* libfuse, loaded by the mount (fs_hold, fs_run) rather than linked, so
 * that every other command (vaultfs get, set, ls...) starts without it.
 * Include this instead of <fuse_lowlevel.h>: the prototypes it includes
 * keep each call checked, and the names below go through the table. */
#ifndef VAULTFS_FUSE_LIB_H
#define VAULTFS_FUSE_LIB_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 314
#endif

#include <fuse_lowlevel.h>

/* Each function with the symbol version this build's header names. */
#define FUSE_LIB_FUNCS(X) \
	X(fuse_add_direntry, "FUSE_3.0") \
	X(fuse_add_direntry_plus, "FUSE_3.0") \
	X(fuse_loop_cfg_create, "FUSE_3.12") \
	X(fuse_loop_cfg_destroy, "FUSE_3.12") \
	X(fuse_loop_cfg_set_clone_fd, "FUSE_3.12") \
	X(fuse_loop_cfg_set_max_threads, "FUSE_3.12") \
	X(fuse_lowlevel_notify_inval_inode, "FUSE_3.0") \
	X(fuse_opt_add_arg, "FUSE_3.0") \
	X(fuse_opt_free_args, "FUSE_3.0") \
	X(fuse_remove_signal_handlers, "FUSE_3.0") \
	X(fuse_reply_attr, "FUSE_3.0") \
	X(fuse_reply_buf, "FUSE_3.0") \
	X(fuse_reply_create, "FUSE_3.0") \
	X(fuse_reply_entry, "FUSE_3.0") \
	X(fuse_reply_err, "FUSE_3.0") \
	X(fuse_reply_open, "FUSE_3.0") \
	X(fuse_reply_statfs, "FUSE_3.0") \
	X(fuse_reply_write, "FUSE_3.0") \
	X(fuse_reply_xattr, "FUSE_3.0") \
	X(fuse_req_ctx, "FUSE_3.0") \
	X(fuse_req_getgroups, "FUSE_3.0") \
	X(fuse_req_userdata, "FUSE_3.0") \
	X(fuse_session_custom_io, "FUSE_3.0") \
	X(fuse_session_destroy, "FUSE_3.0") \
	X(fuse_session_fd, "FUSE_3.0") \
	X(fuse_session_loop_mt, "FUSE_3.12") \
	X(fuse_session_mount, "FUSE_3.0") \
	X(fuse_session_new, "FUSE_3.0") \
	X(fuse_session_unmount, "FUSE_3.0") \
	X(fuse_set_log_func, "FUSE_3.7") \
	X(fuse_set_signal_handlers, "FUSE_3.0")

#define FUSE_LIB_FIELD(f, version) __typeof__(&f) p_##f;
struct fuse_lib {
	FUSE_LIB_FUNCS(FUSE_LIB_FIELD)
};
#undef FUSE_LIB_FIELD
extern struct fuse_lib fuse_lib;

/* 0 once libfuse is loaded (and on every later call), or -1: then
 * fuse_lib_error() says why. */
int fuse_lib_load(void);
const char *fuse_lib_error(void);

#define fuse_add_direntry (fuse_lib.p_fuse_add_direntry)
#define fuse_add_direntry_plus (fuse_lib.p_fuse_add_direntry_plus)
#define fuse_loop_cfg_create (fuse_lib.p_fuse_loop_cfg_create)
#define fuse_loop_cfg_destroy (fuse_lib.p_fuse_loop_cfg_destroy)
#define fuse_loop_cfg_set_clone_fd (fuse_lib.p_fuse_loop_cfg_set_clone_fd)
#define fuse_loop_cfg_set_max_threads (fuse_lib.p_fuse_loop_cfg_set_max_threads)
#define fuse_lowlevel_notify_inval_inode (fuse_lib.p_fuse_lowlevel_notify_inval_inode)
#define fuse_opt_add_arg (fuse_lib.p_fuse_opt_add_arg)
#define fuse_opt_free_args (fuse_lib.p_fuse_opt_free_args)
#define fuse_remove_signal_handlers (fuse_lib.p_fuse_remove_signal_handlers)
#define fuse_reply_attr (fuse_lib.p_fuse_reply_attr)
#define fuse_reply_buf (fuse_lib.p_fuse_reply_buf)
#define fuse_reply_create (fuse_lib.p_fuse_reply_create)
#define fuse_reply_entry (fuse_lib.p_fuse_reply_entry)
#define fuse_reply_err (fuse_lib.p_fuse_reply_err)
#define fuse_reply_open (fuse_lib.p_fuse_reply_open)
#define fuse_reply_statfs (fuse_lib.p_fuse_reply_statfs)
#define fuse_reply_write (fuse_lib.p_fuse_reply_write)
#define fuse_reply_xattr (fuse_lib.p_fuse_reply_xattr)
#define fuse_req_ctx (fuse_lib.p_fuse_req_ctx)
#define fuse_req_getgroups (fuse_lib.p_fuse_req_getgroups)
#define fuse_req_userdata (fuse_lib.p_fuse_req_userdata)
#define fuse_session_custom_io (fuse_lib.p_fuse_session_custom_io)
#define fuse_session_destroy (fuse_lib.p_fuse_session_destroy)
#define fuse_session_fd (fuse_lib.p_fuse_session_fd)
#undef fuse_session_loop_mt
#define fuse_session_loop_mt (fuse_lib.p_fuse_session_loop_mt)
#define fuse_session_mount (fuse_lib.p_fuse_session_mount)
#define fuse_session_new (fuse_lib.p_fuse_session_new)
#define fuse_session_unmount (fuse_lib.p_fuse_session_unmount)
#define fuse_set_log_func (fuse_lib.p_fuse_set_log_func)
#define fuse_set_signal_handlers (fuse_lib.p_fuse_set_signal_handlers)

#endif
