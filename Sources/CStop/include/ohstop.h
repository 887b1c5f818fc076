#ifndef OHSTOP_H
#define OHSTOP_H

// Stop requests: SIGTERM, SIGINT and SIGUSR1 (what mpirun, Slurm at the time limit or with
// --signal, and Ctrl-C send) recorded by async-signal-safe handlers, for the training loop to
// read at its next step boundary.

/// Installs the handlers. They record the first signal; a repeated SIGTERM or SIGUSR1 changes
/// nothing (clusters often deliver them twice), while a second SIGINT (Ctrl-C) ends the process
/// at once, as it would have without them. With `note` set, the first signal also prints one
/// line on stderr.
void oh_stop_install(int note);
/// The signal that asked this process to stop (SIGTERM, SIGINT or SIGUSR1), or 0.
int oh_stop_signal(void);
/// Its name ("SIGTERM"), or "a signal".
const char *oh_stop_signal_name(int signal);

#endif
