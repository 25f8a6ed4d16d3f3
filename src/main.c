/* vaultfs: secrets encrypted in SQLite, served as files. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *description;
} commands[] = {
	{ "keygen", keygen_main, "Print (or write with --out) a new master key" },
	{ "init", init_main, "Create a new vault database" },
	{ "mount", mount_main, "Mount the vault as a filesystem" },
	{ "status", status_main, "Show each mount's holder, worker, uptime and restarts" },
	{ "reload", reload_main, "Reload a mount's key, or upgrade its worker (--upgrade)" },
	{ "ls", ls_main, "List instances, or the keys of an instance" },
	{ "get", get_main, "Write a secret's value to standard output" },
	{ "set", set_main, "Store a secret's value read from standard input" },
	{ "rm", rm_main, "Delete a secret (undelete brings it back for a while)" },
	{ "describe", describe_main, "Set or show a secret's description and type" },
	{ "history", history_main, "List a secret's kept versions (never values)" },
	{ "rollback", rollback_main, "Make an old version current again" },
	{ "undelete", undelete_main, "Bring back a deleted secret" },
	{ "purge", purge_main, "Erase deleted secrets and their history for good" },
	{ "check", check_main, "Exit non-zero while a key the config expects is missing" },
	{ "export", export_main, "List instances and keys as JSON, without values" },
	{ "watch", watch_main, "Print changes (names, versions, who) as they happen" },
	{ "import", import_main, "Import a dotenv file or a secrets directory" },
	{ "apply", apply_main, "Replace several keys in one transaction: all or nothing" },
	{ "template", template_main, "Store (set) or show (get) a template of several keys" },
	{ "render", render_main, "Write a template rendered from the current values" },
	{ "backup", backup_main, "Write a consistent backup, also while mounted" },
	{ "restore", restore_main, "Bring back a backup the master key opens" },
	{ "rotate-key", rotate_key_main, "Rotate the master key, or an instance's data key" },
	{ "audit", audit_main, "Show or verify the audit log" },
	{ "doctor", doctor_main, "Check the host and the vault's files for weak spots" },
};

static void show_usage(FILE *f)
{
	fprintf(f, "usage: vaultfs COMMAND [OPTIONS] [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].description);
	fprintf(f, "\n'vaultfs COMMAND --help' describes a command; 'vaultfs --version' "
		"prints the version.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		show_usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("vaultfs %s\n", VAULTFS_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		show_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "vaultfs: unknown command '%s'\n\n", argv[1]);
	show_usage(stderr);
	return EXIT_USAGE;
}
