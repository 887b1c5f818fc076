#include "ohstop.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t requested = 0;
static volatile sig_atomic_t note_first = 0;

static void on_signal(int signal) {
    if (requested == 0) {
        requested = signal;
        if (note_first) {
            // write(2) is async-signal-safe; stdio is not.
            static const char text[] = "orthohash: stopping after this step with a checkpoint (Ctrl-C again stops at once)\n";
            ssize_t ignored = write(2, text, sizeof text - 1);
            (void)ignored;
        }
    }
}

void oh_stop_install(int note) {
    note_first = note != 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    // SA_RESTART: interrupted reads, writes and socket calls (MPI over TCP) carry on. SIGTERM
    // and SIGUSR1 often come twice (Slurm's step daemon and srun both pass on the time limit's
    // SIGTERM), so they stay handled; SIGKILL remains the way to stop at once. SIGINT is a
    // person at a terminal: the second Ctrl-C gets the default action back (SA_RESETHAND).
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
    action.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &action, NULL);
}

int oh_stop_signal(void) { return requested; }

const char *oh_stop_signal_name(int signal) {
    switch (signal) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
    }
}
