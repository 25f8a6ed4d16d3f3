/* Written by `make schema-expected` from the migrations in sqlite_schema.c:
 * the objects of a fresh vault's sqlite_master, sorted by type and
 * name, which sq_schema_check compares a file with. Do not edit. */
static const struct schema_obj {
	const char *type, *name, *tbl, *sql;
} schema_expected[] = {
	{ "index", "secrets_by_instance", "secrets",
		"CREATE INDEX secrets_by_instance ON secrets (instance_id)" },
	{ "index", "secrets_by_sub", "secrets",
		"CREATE INDEX secrets_by_sub ON secrets (instance_id, id % 4096)" },
	{ "index", "sqlite_autoindex_instances_1", "instances",
		"" },
	{ "index", "sqlite_autoindex_secrets_1", "secrets",
		"" },
	{ "index", "trash_by_name", "trash",
		"CREATE INDEX trash_by_name ON trash (instance_id, name, deleted)" },
	{ "table", "audit", "audit",
		"CREATE TABLE audit (  seq INTEGER PRIMARY KEY,  time INTEGER NOT NULL,  uid INTEGER NOT NULL, gid INTEGER NOT NULL, pid INTEGER NOT NULL,  comm TEXT NOT NULL, instance TEXT NOT NULL, key TEXT NOT NULL,  op TEXT NOT NULL, result INTEGER NOT NULL, detail TEXT NOT NULL,  mac BLOB NOT NULL, count INTEGER NOT NULL DEFAULT 1, first_time INTEGER)" },
	{ "table", "instances", "instances",
		"CREATE TABLE instances (  id INTEGER PRIMARY KEY AUTOINCREMENT,  name TEXT NOT NULL UNIQUE,  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,  ctime INTEGER NOT NULL, mtime INTEGER NOT NULL,  generation INTEGER NOT NULL,  wrapped_key BLOB NOT NULL, mac BLOB NOT NULL DEFAULT x'', seq INTEGER NOT NULL DEFAULT 0, state BLOB NOT NULL DEFAULT x'', sums BLOB NOT NULL DEFAULT x'')" },
	{ "table", "meta", "meta",
		"CREATE TABLE meta (  key TEXT PRIMARY KEY,  value BLOB NOT NULL) WITHOUT ROWID" },
	{ "table", "secret_attrs", "secret_attrs",
		"CREATE TABLE secret_attrs (  secret_id INTEGER NOT NULL,  name TEXT NOT NULL,  value BLOB NOT NULL, mac BLOB NOT NULL DEFAULT x'',  PRIMARY KEY (secret_id, name)) WITHOUT ROWID" },
	{ "table", "secrets", "secrets",
		"CREATE TABLE secrets (  id INTEGER PRIMARY KEY AUTOINCREMENT,  instance_id INTEGER NOT NULL REFERENCES instances (id),  name TEXT NOT NULL,  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,  version INTEGER NOT NULL, size INTEGER NOT NULL, flags INTEGER NOT NULL,  ctime INTEGER NOT NULL, mtime INTEGER NOT NULL, chtime INTEGER NOT NULL,  updated_by INTEGER NOT NULL,  blob BLOB NOT NULL, mac BLOB NOT NULL DEFAULT x'',  UNIQUE (instance_id, name))" },
	{ "table", "sqlite_sequence", "sqlite_sequence",
		"CREATE TABLE sqlite_sequence(name,seq)" },
	{ "table", "sums_cache", "sums_cache",
		"CREATE TABLE sums_cache (id INTEGER PRIMARY KEY, sums BLOB NOT NULL, mac BLOB NOT NULL)" },
	{ "table", "trash", "trash",
		"CREATE TABLE trash (  secret_id INTEGER PRIMARY KEY,  instance_id INTEGER NOT NULL REFERENCES instances (id),  name TEXT NOT NULL,  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,  ctime INTEGER NOT NULL,  deleted INTEGER NOT NULL, deleted_by INTEGER NOT NULL, mac BLOB NOT NULL DEFAULT x'')" },
	{ "table", "versions", "versions",
		"CREATE TABLE \"versions\" (  secret_id INTEGER NOT NULL,  version INTEGER NOT NULL,  size INTEGER NOT NULL, flags INTEGER NOT NULL,  mtime INTEGER NOT NULL, updated_by INTEGER NOT NULL,  blob BLOB NOT NULL,  mac BLOB NOT NULL DEFAULT x'',  PRIMARY KEY (secret_id, version)) WITHOUT ROWID" },
};
