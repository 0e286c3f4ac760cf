/*
** The SQLite VFS "keel": the platform's default VFS ("unix"), except that the writes SQLite
** makes to a WAL file are gathered, and reach the file in two pwrite calls a commit instead of
** two a page.
**
** Why. SQLite writes each WAL frame with two calls: its 24-byte header, then the page. A
** commit of ten pages is twenty pwrite calls, and on ext4 each pays its own way through the
** page cache (the inode lock, a folio looked up and marked dirty, the file's times), whatever
** its size (BENCHMARKS.md, "A commit's WAL frames in two writes"). Gathered, a commit is
** written as everything up to and including its commit frame's header, then that frame's
** page; one more call for each 120 KiB past the first.
**
** What stays as it was: the bytes written, where, and in which order (a write that does not
** continue what is gathered writes that first). Only the number of calls changes. Nothing is
** made durable here: fsync is the caller's (Keel's sync thread; or SQLite's xSync with
** synchronous = FULL, which writes what is gathered first). A write that fails is reported by
** the call that made it reach the file, within the transaction, so SQLite rolls back as it
** does when its own write fails.
**
** A commit is whole in the file when COMMIT returns, before SQLite publishes it to other
** connections: the commit frame's header and its page are each written at once, and so is a
** commit frame's header written again alone (SQLite recomputing checksums after a transaction
** wrote a page twice), which is then the commit's last write. Any other use of the file (a
** read, its size, a truncation, a sync, a file control, its close) writes what is gathered
** first. What can stay gathered past a transaction: frames a transaction wrote before its
** commit (its page cache spilled) and then rolled back. They are written later, in order,
** before this connection's next write or read of the file, at offsets past the last commit,
** as SQLite itself would have written them. That is safe because one connection writes the
** WAL: another writer of the same database, between the two, could have its frames written
** over. Keel's writer is its only writer (the lock file keeps other processes out); this VFS is
** not for databases that two connections write.
**
** Only connections that ask for it by name use it: Keel's writer. The object is linked whole
** (build.rs) and registers the VFS when the program starts.
*/
#include <string.h>

#include "sqlite3.h"

#define KEEL_VFS_NAME "keel"
/* Bytes of a frame's header, and the most gathered before they are written: the unix VFS
** writes at most 128 KiB - 1 bytes a call, so a commit larger than this is written in pieces of
** about this size (thirty 4 KiB frames each). */
#define FRAME_HEADER 24
#define GATHER_MAX (120 * 1024)

typedef struct WalFile {
  sqlite3_file base;      /* pMethods: &wal_methods */
  sqlite3_file *real;     /* the file as the real VFS opened it, right after this struct */
  unsigned char *buf;     /* gathered bytes, for the file from offset `at` on */
  sqlite3_int64 at;
  int n;                  /* bytes gathered, at most GATHER_MAX */
  int page_ends_commit;   /* the last write was a commit frame's header: its page is next */
} WalFile;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs keel_vfs;
static sqlite3_io_methods wal_methods;

/* Writes what is gathered; whatever the outcome, nothing is gathered after. */
static int flush(WalFile *p) {
  int rc = SQLITE_OK;
  if (p->n > 0) {
    rc = p->real->pMethods->xWrite(p->real, p->buf, p->n, p->at);
    p->n = 0;
  }
  return rc;
}

/* Whether a write of `amt` bytes is a frame header marking a commit: a commit frame's header
** holds the database's size in pages (bytes 4 to 7), every other frame's holds zero. A page is
** never 24 bytes long, and the WAL's own header is 32. */
static int is_commit_header(const void *data, int amt) {
  const unsigned char *b = (const unsigned char *)data;
  return amt == FRAME_HEADER && (b[4] | b[5] | b[6] | b[7]) != 0;
}

/* Room for `more` bytes after those gathered; 0 when there is none (then the caller writes).
** The buffer is allocated at the first write: only the writer's connection ever writes. */
static int room(WalFile *p, int more) {
  if ((sqlite3_int64)p->n + more > GATHER_MAX) return 0;
  if (!p->buf) {
    p->buf = sqlite3_malloc(GATHER_MAX);
    if (!p->buf) return 0;
  }
  return 1;
}

static int walWrite(sqlite3_file *f, const void *data, int amt, sqlite3_int64 at) {
  WalFile *p = (WalFile *)f;
  int rc;
  int ends_commit = p->page_ends_commit;
  int commit_header = is_commit_header(data, amt);
  p->page_ends_commit = commit_header;
  /* Only a write that continues what is gathered joins it. */
  if (p->n > 0 && at != p->at + p->n) {
    rc = flush(p);
    if (rc != SQLITE_OK) return rc;
  }
  if (!room(p, amt)) {
    rc = flush(p);
    if (rc != SQLITE_OK) return rc;
    if (!room(p, amt)) {
      /* Too large to gather (or no memory): written as it comes. */
      return p->real->pMethods->xWrite(p->real, data, amt, at);
    }
  }
  if (p->n == 0) p->at = at;
  memcpy(p->buf + p->n, data, (size_t)amt);
  p->n += amt;
  /* A commit's frames reach the file with its commit frame's header, and that frame's page right
  ** after: then the commit is whole in the file before SQLite publishes it. A header rewritten
  ** alone (SQLite recomputing checksums after a page was written twice in a transaction) is the
  ** commit's last write when it is the commit frame's: it too is written at once. */
  if (commit_header || ends_commit) return flush(p);
  return SQLITE_OK;
}

static int walRead(sqlite3_file *f, void *data, int amt, sqlite3_int64 at) {
  WalFile *p = (WalFile *)f;
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  return p->real->pMethods->xRead(p->real, data, amt, at);
}

static int walClose(sqlite3_file *f) {
  WalFile *p = (WalFile *)f;
  int rc = flush(p);
  int closed = p->real->pMethods ? p->real->pMethods->xClose(p->real) : SQLITE_OK;
  sqlite3_free(p->buf);
  p->buf = 0;
  return rc != SQLITE_OK ? rc : closed;
}

static int walTruncate(sqlite3_file *f, sqlite3_int64 size) {
  WalFile *p = (WalFile *)f;
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  return p->real->pMethods->xTruncate(p->real, size);
}

static int walSync(sqlite3_file *f, int flags) {
  WalFile *p = (WalFile *)f;
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  return p->real->pMethods->xSync(p->real, flags);
}

static int walFileSize(sqlite3_file *f, sqlite3_int64 *size) {
  WalFile *p = (WalFile *)f;
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  return p->real->pMethods->xFileSize(p->real, size);
}

static int walLock(sqlite3_file *f, int level) {
  WalFile *p = (WalFile *)f;
  return p->real->pMethods->xLock(p->real, level);
}

static int walUnlock(sqlite3_file *f, int level) {
  WalFile *p = (WalFile *)f;
  return p->real->pMethods->xUnlock(p->real, level);
}

static int walCheckReservedLock(sqlite3_file *f, int *out) {
  WalFile *p = (WalFile *)f;
  return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int walFileControl(sqlite3_file *f, int op, void *arg) {
  WalFile *p = (WalFile *)f;
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int walSectorSize(sqlite3_file *f) {
  WalFile *p = (WalFile *)f;
  return p->real->pMethods->xSectorSize(p->real);
}

static int walDeviceCharacteristics(sqlite3_file *f) {
  WalFile *p = (WalFile *)f;
  return p->real->pMethods->xDeviceCharacteristics(p->real);
}

/* Opens a WAL file through the real VFS, behind the gathering methods; any other file is the
** real VFS's own (it fits: `szOsFile` is the real one's and more). */
static int keelOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
  (void)vfs;
  if (!(flags & SQLITE_OPEN_WAL)) {
    return real_vfs->xOpen(real_vfs, name, f, flags, out_flags);
  }
  WalFile *p = (WalFile *)f;
  memset(p, 0, sizeof(*p));
  p->real = (sqlite3_file *)&p[1];
  int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    /* SQLite calls xClose of a file whose xOpen failed only if pMethods is set. */
    if (p->real->pMethods) p->real->pMethods->xClose(p->real);
    p->base.pMethods = 0;
    return rc;
  }
  p->base.pMethods = &wal_methods;
  return SQLITE_OK;
}

static int keelDelete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
  (void)vfs;
  return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int keelAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int keelFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
  (void)vfs;
  return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *keelDlOpen(sqlite3_vfs *vfs, const char *name) {
  (void)vfs;
  return real_vfs->xDlOpen(real_vfs, name);
}

static void keelDlError(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  real_vfs->xDlError(real_vfs, n, out);
}

static void (*keelDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
  (void)vfs;
  return real_vfs->xDlSym(real_vfs, handle, symbol);
}

static void keelDlClose(sqlite3_vfs *vfs, void *handle) {
  (void)vfs;
  real_vfs->xDlClose(real_vfs, handle);
}

static int keelRandomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return real_vfs->xRandomness(real_vfs, n, out);
}

static int keelSleep(sqlite3_vfs *vfs, int micros) {
  (void)vfs;
  return real_vfs->xSleep(real_vfs, micros);
}

static int keelCurrentTime(sqlite3_vfs *vfs, double *now) {
  (void)vfs;
  return real_vfs->xCurrentTime(real_vfs, now);
}

static int keelGetLastError(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return real_vfs->xGetLastError(real_vfs, n, out);
}

static int keelCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
  (void)vfs;
  return real_vfs->xCurrentTimeInt64(real_vfs, now);
}

/* Registers "keel" beside the default VFS, once, when the program starts. */
__attribute__((constructor)) static void keel_register_vfs(void) {
  if (sqlite3_vfs_find(KEEL_VFS_NAME)) return;
  real_vfs = sqlite3_vfs_find(0);
  if (!real_vfs || real_vfs->iVersion < 2) return; /* then opening with vfs=keel fails: "no such vfs" */
  wal_methods.iVersion = 1;
  wal_methods.xClose = walClose;
  wal_methods.xRead = walRead;
  wal_methods.xWrite = walWrite;
  wal_methods.xTruncate = walTruncate;
  wal_methods.xSync = walSync;
  wal_methods.xFileSize = walFileSize;
  wal_methods.xLock = walLock;
  wal_methods.xUnlock = walUnlock;
  wal_methods.xCheckReservedLock = walCheckReservedLock;
  wal_methods.xFileControl = walFileControl;
  wal_methods.xSectorSize = walSectorSize;
  wal_methods.xDeviceCharacteristics = walDeviceCharacteristics;
  keel_vfs.iVersion = 2;
  keel_vfs.szOsFile = (int)sizeof(WalFile) + real_vfs->szOsFile;
  keel_vfs.mxPathname = real_vfs->mxPathname;
  keel_vfs.zName = KEEL_VFS_NAME;
  keel_vfs.xOpen = keelOpen;
  keel_vfs.xDelete = keelDelete;
  keel_vfs.xAccess = keelAccess;
  keel_vfs.xFullPathname = keelFullPathname;
  keel_vfs.xDlOpen = keelDlOpen;
  keel_vfs.xDlError = keelDlError;
  keel_vfs.xDlSym = keelDlSym;
  keel_vfs.xDlClose = keelDlClose;
  keel_vfs.xRandomness = keelRandomness;
  keel_vfs.xSleep = keelSleep;
  keel_vfs.xCurrentTime = keelCurrentTime;
  keel_vfs.xGetLastError = keelGetLastError;
  keel_vfs.xCurrentTimeInt64 = keelCurrentTimeInt64;
  sqlite3_vfs_register(&keel_vfs, 0);
}
