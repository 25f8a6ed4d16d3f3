/* Open files: the handle table, its records with the holder (handles outlive
 * a worker), and the states a writer's handle goes through before commit. */
#include "ops_int.h"

/* Sets a handle's flag that fs counts (so that a look for handles with it
 * is free while there are none). */
static void counted_set(struct fs *fs, bool *flag, unsigned *count, bool on)
{
	pthread_mutex_lock(&fs->handles_lock);
	if (*flag != on)
		*count = on ? *count + 1 : *count - 1;
	*flag = on;
	pthread_mutex_unlock(&fs->handles_lock);
}

/* A key made through the mount appears to other processes' reads with its
 * first value: until its creator's first commit (or close, for a key left
 * empty on purpose), their read-only opens find no such key, instead of an
 * empty value. Writers open it (FUSE doesn't say whether their open had
 * O_CREAT, and two writers creating one key at once must both succeed). */
void handle_creating_set(struct fs *fs, struct handle *h, bool on)
{
	counted_set(fs, &h->creating, &fs->creating, on);
}

/*
 * A key created through the mount is its creator's until its first commit:
 * create() reserves its id (its inode number) and records the handle with
 * the holder, and the row is stored with its first value, in the value's
 * transaction, with the audit entries of both the creation and the write:
 * one transaction and one sync per new key written, as for a key updated.
 * Anything else that needs the row first (a lookup, a listing, another
 * open, stat, chmod, rename, unlink, xattrs) stores it empty, as version 0,
 * before it goes on (handle_settle), so what they find is what they would
 * have found had the row been stored at create(). A key whose write failed
 * (EFBIG, no lockable memory) is never stored: its creator's close reports
 * the failure and the name stays free.
 */
void handle_pending_set(struct fs *fs, struct handle *h, bool on)
{
	counted_set(fs, &h->pending, &fs->pending, on);
}

void handle_pending_row(const struct handle *h, struct db_secret *s)
{
	memset(s, 0, sizeof(*s));
	s->id = h->id;
	s->instance_id = h->pend.instance_id;
	snprintf(s->name, sizeof(s->name), "%s", h->ref.key);
	s->uid = h->uid;
	s->gid = h->pend.gid;
	s->mode = h->pend.mode;
	s->ctime_ns = s->mtime_ns = s->chtime_ns = h->pend.ctime_ns;
	s->updated_by = h->uid;
}

int handle_settle_locked(struct fs *fs, struct handle *h, bool value, bool sync)
{
	struct audit_entry created, wrote;
	struct db_secret s;
	int r;

	if (!h->pending)
		return 0;
	if (h->error) {		/* a write failed: the key is never made */
		handle_pending_set(fs, h, false);
		guard_done(fs->v, &h->ref, AUDIT_CREATE, -h->error, "a write failed");
		return -h->error;
	}
	value = value && h->buf;
	handle_pending_row(h, &s);
	guard_entry(&h->ref, AUDIT_CREATE, NULL, &created);
	guard_entry(&h->ref, AUDIT_WRITE, NULL, &wrote);
	r = vault_create_as(fs->v, &s, value ? h->buf->data : NULL, value ? h->buf->len : 0,
			    h->uid, sync, &created, &wrote);
	handle_pending_set(fs, h, false);
	if (r == 0) {
		h->version = s.version;
		if (value) {
			h->dirty = false;
			h->committed = true;
			handle_trunc_done(fs, h);
		}
		return 0;
	}
	guard_done(fs->v, &h->ref, AUDIT_CREATE, r, NULL);
	log_err("%s/%s: cannot store the new key: %s%s%s%s", h->ref.instance, h->ref.key,
		strerror(-r), r == -EIO ? " (" : "", r == -EIO ? db_errmsg(fs->db) : "",
		r == -EIO ? ")" : "");
	if (!h->error)
		h->error = -r;
	return r;
}

static bool pending_is(const struct handle *h, int64_t id, int64_t instance_id,
		       const char *name)
{
	if (id)
		return h->id == id;
	return h->pend.instance_id == instance_id && (!name || !strcmp(h->ref.key, name));
}

/* Settles each pending handle that matches, one at a time: the handle is
 * pinned (handle_free waits) while its lock is taken outside handles_lock,
 * which is taken inside it elsewhere. */
static void settle_where(struct fs *fs, int64_t id, int64_t instance_id, const char *name)
{
	for (;;) {
		struct handle *h;

		pthread_mutex_lock(&fs->handles_lock);
		for (h = fs->pending ? fs->handles : NULL; h; h = h->next)
			if (h->pending && !h->freeing && pending_is(h, id, instance_id, name))
				break;
		if (h)
			h->pins++;
		pthread_mutex_unlock(&fs->handles_lock);
		if (!h)
			return;
		pthread_mutex_lock(&h->lock);
		if (h->pending) {
			(void)handle_settle_locked(fs, h, false, false);
			handle_record(fs, h);
		}
		pthread_mutex_unlock(&h->lock);
		pthread_mutex_lock(&fs->handles_lock);
		if (--h->pins == 0)
			pthread_cond_broadcast(&fs->limbo_cond);
		pthread_mutex_unlock(&fs->handles_lock);
	}
}

bool handle_pending_stat(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	struct db_secret s;
	bool found = false;

	if (ino_kind(ino) != K_SECRET)
		return false;
	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->pending ? fs->handles : NULL; h && !found; h = h->next) {
		found = h->pending && h->id == ino_id(ino);
		if (found)
			handle_pending_row(h, &s);
	}
	pthread_mutex_unlock(&fs->handles_lock);
	if (found)
		ops_stat_secret(&s, st);
	return found;
}

void handle_settle(struct fs *fs, fuse_ino_t ino)
{
	if (ino_kind(ino) == K_SECRET)
		settle_where(fs, ino_id(ino), 0, NULL);
}

void handle_settle_name(struct fs *fs, int64_t instance_id, const char *name)
{
	settle_where(fs, 0, instance_id, name);
}

void handle_settle_instance(struct fs *fs, int64_t instance_id)
{
	settle_where(fs, 0, instance_id, NULL);
}

/* An O_TRUNC handle whose writer closed it once without writing is in
 * limbo: it is a shell's redirection whose command has yet to write, or a
 * program that emptied the key on purpose and is about to be released
 * (FUSE sends RELEASE after close() returned). A reader opening the key
 * meanwhile waits a moment for the next step, so that it reads the empty
 * value of a release that came first, and otherwise the old value. */
#define LIMBO_WAIT_NS 50000000L

void handle_limbo_set(struct fs *fs, struct handle *h, bool on)
{
	pthread_mutex_lock(&fs->handles_lock);
	if (h->limbo != on) {
		fs->limbo += on ? 1 : -1;
		if (!on)
			pthread_cond_broadcast(&fs->limbo_cond);
	}
	h->limbo = on;
	pthread_mutex_unlock(&fs->handles_lock);
}

/* Under h->lock: h was written to or resized. */
void handle_trunc_done(struct fs *fs, struct handle *h)
{
	h->trunc_pending = false;
	if (h->limbo)
		handle_limbo_set(fs, h, false);
}

void handle_limbo_wait(struct fs *fs, int64_t id)
{
	struct timespec until;
	bool in = true;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += LIMBO_WAIT_NS;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&fs->handles_lock);
	while (in) {
		in = false;
		for (struct handle *h = fs->limbo ? fs->handles : NULL; h && !in; h = h->next)
			in = h->limbo && h->id == id;
		if (in && pthread_cond_timedwait(&fs->limbo_cond, &fs->handles_lock, &until))
			break;
	}
	pthread_mutex_unlock(&fs->handles_lock);
}

bool handle_created_by_other(struct fs *fs, int64_t id, pid_t pid)
{
	bool hidden = false;

	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->creating ? fs->handles : NULL; h && !hidden; h = h->next)
		hidden = h->creating && h->id == id && h->opener != pid;
	pthread_mutex_unlock(&fs->handles_lock);
	return hidden;
}

/* Grows or shrinks a value in locked memory; new bytes are zero. */
int handle_buf_resize(struct fs *fs, struct secbuf *b, size_t len)
{
	int r;

	if (len > fs->conf->max_value_size)
		return -EFBIG;
	if (len > b->len) {
		r = secbuf_reserve(b, len);
		if (r < 0)
			return r;
		memset(b->data + b->len, 0, len - b->len);
	} else {
		secmem_wipe(b->data + len, b->len - len);
	}
	b->len = len;
	return 0;
}

static uint64_t fh_assign(struct handle *h);
static void fh_release(struct handle *h);

void handle_free(struct fs *fs, struct handle *h)
{
	if (!h)
		return;
	/* No thread settles it from now on, and none still does when its
	 * record is dropped: one that records it after would leave the holder
	 * a record of a closed file. */
	pthread_mutex_lock(&fs->handles_lock);
	h->freeing = true;
	while (h->pins)
		pthread_cond_wait(&fs->limbo_cond, &fs->handles_lock);
	pthread_mutex_unlock(&fs->handles_lock);
	fh_release(h);
	pthread_mutex_lock(&fs->handles_lock);
	if (h->creating)
		fs->creating--;
	if (h->pending)
		fs->pending--;
	if (h->limbo) {
		fs->limbo--;
		pthread_cond_broadcast(&fs->limbo_cond);
	}
	if (h->prev)
		h->prev->next = h->next;
	else if (fs->handles == h)
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
	/* read() replies while holding the lock, and the kernel may send
	 * RELEASE as soon as that reply is out: let that thread unlock first. */
	pthread_mutex_lock(&h->lock);
	pthread_mutex_unlock(&h->lock);
	secbuf_free(h->buf);
	secbuf_free(h->orig);
	quota_close(h->qu);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

/* A handle for uid, counted in its share (-EMFILE at its limit). Until
 * handle_charged(), buffers this thread makes are charged to that share. */
int handle_new(struct fs *fs, struct handle **out, int64_t id, uid_t uid, pid_t opener)
{
	struct handle *h = calloc(1, sizeof(*h));
	int r;

	*out = NULL;
	if (!h)
		return -ENOMEM;
	r = quota_open(uid, &h->qu);
	if (r < 0) {
		free(h);
		return r;
	}
	secmem_use(quota_account(h->qu));
	pthread_mutex_init(&h->lock, NULL);
	h->id = id;
	h->uid = uid;
	h->opener = opener;
	h->opened_by = session_request(&(bool){ false });
	pthread_mutex_lock(&fs->handles_lock);
	h->next = fs->handles;
	if (h->next)
		h->next->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->handles_lock);
	*out = h;
	return 0;
}

/* The handle's buffers are made: nothing more of this thread's is the
 * opener's. */
void handle_charged(void)
{
	secmem_use(NULL);
}

void handle_open_reply(struct fuse_file_info *fi, struct handle *h)
{
	fi->fh = fh_assign(h);
	fi->direct_io = 1;
	fi->keep_cache = 0;
}

struct handle *handle_resent_open(struct fs *fs)
{
	bool resent;
	uint64_t unique = session_request(&resent);
	struct handle *found = NULL;

	if (!resent || !unique)
		return NULL;
	/* opened_by never changes once the handle is in the list. */
	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->handles; h && !found; h = h->next)
		if (h->opened_by == unique && !h->readonly && h->fh)
			found = h;
	pthread_mutex_unlock(&fs->handles_lock);
	if (found)
		log_info("secret %lld: a %s the previous worker handled was sent again: "
			 "answered as then", (long long)found->id, session_request_name());
	return found;
}

void handle_open_reply_again(struct fuse_file_info *fi, const struct handle *h)
{
	fi->fh = h->fh;
	fi->direct_io = 1;
	fi->keep_cache = 0;
}

/*
 * Handles across serving processes. The kernel keeps an open file's fh
 * while workers come and go (src/holder.c), so an fh names the worker that
 * made it (its epoch) and a slot in that worker's table; a reader's fh
 * also carries the version it read, so the next worker rebuilds it exactly.
 * A writer's state, its buffer sealed under a key derived from the master
 * key, is recorded with the holder at every change before the change is
 * acknowledged, and the next worker adopts it. A writer whose record is
 * missing (its value too large to record) fails with EIO, never silently.
 * The record also names the request that opened the handle and the last
 * ones that changed it: those the kernel sends again to the next worker
 * (FUSE_NOTIFY_RESEND) are answered as then, not carried out twice.
 *
 *   bits 63..48 epoch, 47 reader, 46..20 version + 1 (0: unknown), 19..0 slot
 */
#define FH_EPOCH_SHIFT 48

#define FH_READER (1ULL << 47)

#define FH_VER_SHIFT 20

#define FH_VER_MASK ((1ULL << 27) - 1)

#define FH_SLOTS (1UL << 20)

static struct {
	pthread_mutex_t lock;
	struct handle **slot;	/* [0] unused */
	size_t n, next;
	struct secbuf *key;	/* seals writers' records */
} ht = { .lock = PTHREAD_MUTEX_INITIALIZER };

struct handle_rec {
	int64_t id;
	uint64_t version;
	uint64_t owner;
	int32_t opener;
	uint32_t uid;
	int32_t error;
	uint32_t trunc_flushes;
	uint8_t append, dirty, committed, closed, trunc_pending, creating;
	struct guard_ref ref;
};

static uint64_t fh_epoch(void)
{
	return (uint64_t)(session_epoch() & 0xffff) << FH_EPOCH_SHIFT;
}

/* Puts h in a free slot; 0 or -ENOMEM. Called with ht.lock held. */
static int slot_put(struct handle *h)
{
	struct handle **grown;
	size_t i, n;

	for (i = 1; i < ht.n; i++) {
		size_t s = 1 + (ht.next + i - 1) % (ht.n - 1);

		if (!ht.slot[s]) {
			ht.slot[s] = h;
			h->slot = (uint32_t)s;
			ht.next = s;
			return 0;
		}
	}
	n = ht.n ? ht.n * 2 : 64;
	if (n > FH_SLOTS)
		return -ENOMEM;
	grown = realloc(ht.slot, n * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	memset(grown + ht.n, 0, (n - ht.n) * sizeof(*grown));
	i = ht.n ? ht.n : 1;
	ht.slot = grown;
	ht.n = n;
	grown[i] = h;
	h->slot = (uint32_t)i;
	return 0;
}

static uint64_t fh_assign(struct handle *h)
{
	uint64_t ver = h->read_version + 1;

	pthread_mutex_lock(&ht.lock);
	if (slot_put(h) == 0) {
		h->fh = fh_epoch() | h->slot;
		if (h->readonly)
			h->fh |= FH_READER | ((ver <= FH_VER_MASK ? ver : 0) << FH_VER_SHIFT);
	}
	pthread_mutex_unlock(&ht.lock);
	/* No slot: fh 0 is never found again, the file fails with EIO. */
	return h->fh;
}

static void fh_release(struct handle *h)
{
	/* Before the slot is free: the next writer in it has the same fh, and
	 * the holder must get that one's record after this drop, not before. */
	if (h->recorded)
		session_forget(h->fh);
	h->recorded = false;
	pthread_mutex_lock(&ht.lock);
	if (h->slot && h->slot < ht.n && ht.slot[h->slot] == h)
		ht.slot[h->slot] = NULL;
	h->slot = 0;
	pthread_mutex_unlock(&ht.lock);
}

/* Called with ht.lock held. */
static struct handle *fh_find(uint64_t fh)
{
	size_t s = fh & (FH_SLOTS - 1);

	if ((fh & ~(FH_READER | (FH_VER_MASK << FH_VER_SHIFT) | (FH_SLOTS - 1))) == fh_epoch())
		return s < ht.n && ht.slot[s] && ht.slot[s]->fh == fh ? ht.slot[s] : NULL;
	for (s = 1; s < ht.n; s++)
		if (ht.slot[s] && ht.slot[s]->fh == fh)
			return ht.slot[s];
	return NULL;
}

/* A reader opened by an earlier worker: the version it read, again. */
static struct handle *reader_rebuild(struct fs *fs, fuse_ino_t ino, uint64_t fh)
{
	uint64_t ver = (fh >> FH_VER_SHIFT) & FH_VER_MASK;
	struct handle *h = NULL, *found;
	int r;

	if (!ver || ino_kind(ino) != K_SECRET || handle_new(fs, &h, ino_id(ino), 0, 0) < 0)
		return NULL;
	h->readonly = true;
	h->read_version = ver - 1;
	r = ver == 1 ? secbuf_new(&h->buf, 0) :
		vault_read_version(fs->v, h->id, ver - 1, &h->buf, NULL);
	if (r < 0) {
		log_warn("secret %lld: cannot reopen version %llu for a reader of the "
			 "previous worker: %s", (long long)h->id,
			 (unsigned long long)(ver - 1), strerror(-r));
		handle_free(fs, h);
		return NULL;
	}
	if (ops_getattr_ino(fs, ino, &h->st) == 0) {
		h->st.st_size = (off_t)h->buf->len;
		h->have_st = true;
	}
	h->fh = fh;
	pthread_mutex_lock(&ht.lock);
	found = fh_find(fh);
	if (!found && slot_put(h) == 0)
		found = h;
	pthread_mutex_unlock(&ht.lock);
	if (found != h) {
		h->fh = 0;
		handle_free(fs, h);
	}
	return found;
}

/* The handle fi names, if this worker has it: made or adopted here, or
 * rebuilt since. */
struct handle *handle_find(const struct fuse_file_info *fi)
{
	struct handle *h;

	pthread_mutex_lock(&ht.lock);
	h = fi->fh ? fh_find(fi->fh) : NULL;
	pthread_mutex_unlock(&ht.lock);
	return h;
}

struct handle *handle_get(struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_find(fi);

	if (!h && (fi->fh & FH_READER))
		h = reader_rebuild(fs, ino, fi->fh);
	if (!h)
		log_warn("inode %llu: unknown file handle %#llx (a writer of a previous "
			 "worker whose state was not recorded): EIO",
			 (unsigned long long)ino, (unsigned long long)fi->fh);
	return h;
}

/* Then the requests that changed the handle (handle_done). A record from a
 * worker older than that part has none: it is adopted with none. */
#define REC_DONE_MAGIC 0x31656e6f64736676ULL	/* "vfsdone1" */

struct rec_head {
	struct handle_rec hr;
	uint64_t magic;
	struct handle_done done[HANDLE_DONE];
	uint32_t done_next, pad;
	uint64_t opened_by;
};

/* A pending key's record (magic REC_PEND_MAGIC) adds what its row will
 * hold. A worker older than that part can't open it (its AD differs) and
 * fails that writer with EIO, never storing its value under the id alone. */
#define REC_PEND_MAGIC 0x32656e6f64736676ULL	/* "vfsdone2" */

struct rec_pend {
	struct rec_head head;
	struct handle_pending pend;
};

bool handle_done_find(const struct handle *h, int *result)
{
	bool resent, found = false;
	uint64_t unique = session_request(&resent);

	for (int i = 0; resent && unique && !found && i < HANDLE_DONE; i++) {
		if (h->done[i].unique == unique) {
			*result = h->done[i].result;
			found = true;
		}
	}
	if (found)
		log_info("secret %lld: a %s the previous worker handled was sent again: "
			 "answered as then%s", (long long)h->id, session_request_name(),
			 h->limbo ? " (the redirect's first close)" : "");
	return found;
}

void handle_done_add(struct handle *h, int result)
{
	bool resent;
	uint64_t unique = session_request(&resent);

	if (!unique)
		return;
	h->done[h->done_next % HANDLE_DONE] = (struct handle_done){
		.unique = unique, .result = result,
	};
	h->done_next = (h->done_next + 1) % HANDLE_DONE;
}

static void rec_ad(struct seal_ad *ad, uint64_t fh, const void *head, size_t len)
{
	seal_ad_digest(ad, &fh, sizeof(fh), head, len);
}

/* Called with h->lock held, or before the handle is shared. */
void handle_record(struct fs *fs, struct handle *h)
{
	struct rec_pend rp;
	struct rec_head head;
	unsigned char *blob = NULL, *rec = NULL;
	const void *hd = &head;
	size_t hlen = sizeof(head);
	struct seal_ad ad;
	size_t len = 0;
	int r = -EINVAL;

	(void)fs;
	if (!session_epoch() || !ht.key || h->readonly || !h->fh)
		return;
	memset(&head, 0, sizeof(head));
	head.hr = (struct handle_rec){
		.id = h->id, .version = h->version, .owner = h->owner, .opener = h->opener,
		.uid = h->uid, .error = h->error, .append = h->append, .dirty = h->dirty,
		.committed = h->committed, .closed = h->closed, .ref = h->ref,
		.trunc_pending = h->trunc_pending, .trunc_flushes = h->trunc_flushes,
		.creating = h->creating,
	};
	head.magic = REC_DONE_MAGIC;
	memcpy(head.done, h->done, sizeof(head.done));
	head.done_next = h->done_next;
	head.opened_by = h->opened_by;
	if (h->pending) {
		memset(&rp, 0, sizeof(rp));
		rp.head = head;
		rp.head.magic = REC_PEND_MAGIC;
		rp.pend = h->pend;
		hd = &rp;
		hlen = sizeof(rp);
	}
	rec_ad(&ad, h->fh, hd, hlen);
	if (h->buf)
		r = seal_seal(&blob, &len, ht.key->data, &ad, h->buf->data, h->buf->len);
	rec = r == 0 ? malloc(hlen + len) : NULL;
	if (rec) {
		memcpy(rec, hd, hlen);
		memcpy(rec + hlen, blob, len);
		r = session_record(h->fh, rec, hlen + len);
	}
	if (r < 0 || !rec) {
		if (h->recorded)
			session_forget(h->fh);
		h->recorded = false;
		log_debug("secret %lld: open writer not recorded with the holder: %s",
			  (long long)h->id, strerror(r < 0 ? -r : ENOMEM));
	} else {
		h->recorded = true;
	}
	free(rec);
	free(blob);
}

/* A writer recorded by an earlier worker, before this one serves. */
void handle_adopt(void *ctx, uint64_t fh, const void *rec, size_t len)
{
	struct fs *fs = ctx;
	struct rec_pend rp;
	struct rec_head head;
	struct handle_rec hr;
	struct handle *h = NULL;
	struct seal_ad ad;
	size_t at = sizeof(hr);
	bool pending = false;
	int r = -EINVAL;

	if (len < sizeof(hr) || !ht.key)
		goto out;
	memset(&head, 0, sizeof(head));
	if (len > sizeof(head))
		memcpy(&head, rec, sizeof(head));
	if (head.magic == REC_PEND_MAGIC && len > sizeof(rp)) {
		memcpy(&rp, rec, sizeof(rp));
		pending = true;
		at = sizeof(rp);
		rec_ad(&ad, fh, &rp, sizeof(rp));
	} else if (head.magic == REC_DONE_MAGIC) {
		at = sizeof(head);
		rec_ad(&ad, fh, &head, sizeof(head));
	} else {
		memcpy(&head.hr, rec, sizeof(head.hr));
		rec_ad(&ad, fh, &head.hr, sizeof(head.hr));
	}
	hr = head.hr;
	r = handle_new(fs, &h, hr.id, hr.uid, hr.opener);
	if (r == 0)
		r = seal_open(&h->buf, ht.key->data, &ad, (const unsigned char *)rec + at,
			      len - at);
	if (r == 0) {
		memcpy(h->done, head.done, sizeof(h->done));
		h->done_next = head.done_next % HANDLE_DONE;
		h->opened_by = head.opened_by;
		h->version = hr.version;
		h->owner = hr.owner;
		h->error = hr.error;
		h->append = hr.append;
		h->dirty = hr.dirty;
		h->committed = hr.committed;
		h->closed = hr.closed;
		h->trunc_pending = hr.trunc_pending;
		h->trunc_flushes = hr.trunc_flushes;
		h->ref = hr.ref;
		h->fh = fh;
		h->recorded = true;
		pthread_mutex_lock(&ht.lock);
		r = slot_put(h);
		pthread_mutex_unlock(&ht.lock);
	}
	if (r == 0 && hr.creating)
		handle_creating_set(fs, h, true);
	if (r == 0 && pending) {
		h->pend = rp.pend;
		handle_pending_set(fs, h, true);
	}
	if (r == 0 && hr.trunc_pending && hr.trunc_flushes)
		handle_limbo_set(fs, h, true);
out:
	if (r < 0) {
		log_warn("cannot adopt an open writer of the previous worker: %s", strerror(-r));
		if (h)
			h->recorded = false;
		handle_free(fs, h);
	}
}

int handle_keys(struct vault *v)
{
	const struct secbuf *base = vault_audit_key(v);

	if (!base || base->len < SEAL_KEY_LEN)
		return -EINVAL;
	return seal_derive_in(&ht.key, base->data, 1, "vfshandl");
}

/* A retiring worker: its handles live on in the holder's records and in
 * readers' fh; only its copies of the plaintext go. */
void handle_wipe_all(void *ctx)
{
	struct fs *fs = ctx;

	pthread_mutex_lock(&fs->handles_lock);
	for (struct handle *h = fs->handles; h; h = h->next) {
		secbuf_free(h->buf);
		secbuf_free(h->orig);
		h->buf = h->orig = NULL;
	}
	pthread_mutex_unlock(&fs->handles_lock);
	secbuf_free(ht.key);
	ht.key = NULL;
}

int handle_limbo_init(struct fs *fs)
{
	pthread_condattr_t attr;
	int r;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	r = pthread_cond_init(&fs->limbo_cond, &attr);
	pthread_condattr_destroy(&attr);
	return r;
}

void handle_keys_free(void)
{
	secbuf_free(ht.key);
	ht.key = NULL;
}
