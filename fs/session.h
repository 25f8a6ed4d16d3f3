/* A serving process's side of an adopted FUSE connection. The holder
 * (src/holder.c) mounts and keeps /dev/fuse open; each serving process
 * (worker) gets the descriptor over a control socket and serves it through
 * libfuse's custom I/O, so the connection outlives any one worker. */
#ifndef VAULTFS_SESSION_H
#define VAULTFS_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fuse_session;

/* Messages on the control socket (SOCK_SEQPACKET), one byte of type then
 * the payload. Worker to holder: */
enum {
	SESS_WAITING = 'W',	/* ready to serve once told to go */
	SESS_INIT = 'I',	/* + the kernel's FUSE_INIT request, as read */
	SESS_SERVING = 'R',	/* serving requests */
	SESS_HANDLE = 'H',	/* + u64 fh + a sealed record of an open handle */
	SESS_DROP = 'D',	/* + u64 fh: that handle is released */
	/* Holder to worker (SESS_HANDLE too, replaying the records): */
	SESS_GO = 'G',		/* + struct sess_go + INIT bytes; /dev/fuse attached */
	SESS_RETIRE = 'Q',	/* stop reading requests, finish, exit */
};

struct sess_go {
	uint32_t epoch;		/* this worker's number, from 1 */
	uint32_t resend;	/* ask the kernel to resend unanswered requests */
};

/* The largest message: a handle record with a value of up to this size
 * (larger values are kept in the worker only). */
#define SESS_MSG_MAX (192 * 1024)

/* Called with each handle record the holder replays, before serving. */
typedef void (*sess_record_fn)(void *ctx, uint64_t fh, const void *rec, size_t len);

/* In the worker: says it is waiting, collects the replayed handle records
 * (calling fn for each) and waits to be told to go. 0 and the device
 * descriptor in *dev_fd, or -errno. */
int session_wait_go(int ctl_fd, sess_record_fn fn, void *ctx, int *dev_fd);
/* Makes se serve the adopted descriptor: replays INIT to a later worker and
 * asks for a resend. 0 or -errno. */
int session_adopt(struct fuse_session *se, int dev_fd);
/* After the session is set up: tells the holder this worker serves, and
 * starts the thread that listens for retirement. */
int session_serving(void (*on_retire)(void *), void *ctx);
/* Tests only: hold each FUSE_OPEN read open_ms before serving it, and the
 * reply to each CREATE, OPEN, WRITE and FLUSH reply_ms after it was handled. */
void session_test_hold(unsigned open_ms, unsigned reply_ms);
/* The request this thread serves, as the kernel numbered it (0: unknown).
 * *resent: the kernel sent it again because the previous worker read it
 * and died before answering (FUSE_NOTIFY_RESEND), so that worker may have
 * handled it already. */
uint64_t session_request(bool *resent);
/* Its name, for the log: "WRITE", "FLUSH", ... */
const char *session_request_name(void);
/* This worker's number (0: not under a holder). */
uint32_t session_epoch(void);
/* Handle records kept by the holder for the next worker. No-ops without a
 * holder. The record must hold no plaintext (seal it). */
int session_record(uint64_t fh, const void *rec, size_t len);
void session_forget(uint64_t fh);

#endif
