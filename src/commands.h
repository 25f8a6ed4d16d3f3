/* Subcommands: each is `vaultfs NAME ...`, with its own --help. */
#ifndef VAULTFS_COMMANDS_H
#define VAULTFS_COMMANDS_H

int keygen_main(int argc, char **argv);
int init_main(int argc, char **argv);
int mount_main(int argc, char **argv);
int ls_main(int argc, char **argv);
int get_main(int argc, char **argv);
int set_main(int argc, char **argv);
int rm_main(int argc, char **argv);
int check_main(int argc, char **argv);
int export_main(int argc, char **argv);
int history_main(int argc, char **argv);
int rollback_main(int argc, char **argv);
int undelete_main(int argc, char **argv);
int purge_main(int argc, char **argv);
int describe_main(int argc, char **argv);
int rotate_key_main(int argc, char **argv);
int backup_main(int argc, char **argv);
int restore_main(int argc, char **argv);
int import_main(int argc, char **argv);
int audit_main(int argc, char **argv);
int doctor_main(int argc, char **argv);
int status_main(int argc, char **argv);
int reload_main(int argc, char **argv);
int template_main(int argc, char **argv);
int render_main(int argc, char **argv);
int apply_main(int argc, char **argv);
int watch_main(int argc, char **argv);

#endif
