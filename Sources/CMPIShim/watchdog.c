// The watchdog: every wait for other ranks has a deadline; a rank that nears it asks the others
// where they are, and at the deadline the job ends naming the ranks that did not arrive. Also the
// one way a collective is called (ohmpi_call), blocking under the watchdog thread or polled.
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double ohmpi_timeout = 0;               // seconds a collective may wait (<= 0: forever)
static double ohmpi_next_allowance = 0;        // the next collective may wait this long instead (ohmpi_allow_next_wait)
static int64_t ohmpi_step = -1;
static int64_t ohmpi_sequence = 0;            // collectives entered so far, the same on every rank
// With MPI_THREAD_MULTIPLE, collectives are the fast blocking ones and a helper thread watches
// the clock and answers the other ranks' questions; otherwise collectives are non-blocking and
// the waiting thread does both while it polls. What it watches is copied here (under
// ohmpi_lock), so a message never reads a caller's string after the call returned.
static pthread_mutex_t ohmpi_lock = PTHREAD_MUTEX_INITIALIZER;
// Held by the watchdog thread while it calls MPI; ohmpi_watchdog_stop takes it to stop the
// thread before the communicators go.
static pthread_mutex_t ohmpi_watch_lock = PTHREAD_MUTEX_INITIALIZER;
static int ohmpi_watch_running = 0, ohmpi_watch_stopped = 0;
static int64_t ohmpi_waiting_sequence = 0;    // the collective waited in now (0: none)
static double ohmpi_entered = 0;               // when the wait began
static double ohmpi_deadline = 0;              // seconds it may last
static char ohmpi_what[256];                   // the collective's name
static char ohmpi_activity[256] = "starting";  // what this rank does outside collectives
// Questions between watchdogs: a rank whose wait nears its deadline asks every other rank where
// it is; each answers with the collective it waits in (its sequence number) or what it is doing.
enum { OHMPI_QUERY_TAG = 4242, OHMPI_ANSWER_TAG = 4243 };
typedef struct { int64_t asked; int64_t sequence; int64_t step; char label[232]; } ohmpi_answer;

void ohmpi_set_timeout(double seconds) { ohmpi_timeout = seconds; }
void ohmpi_set_step(int64_t step) { ohmpi_step = step; }
void ohmpi_allow_next_wait(double seconds) { ohmpi_next_allowance = seconds; }

void ohmpi_set_activity(const char *what) {
    pthread_mutex_lock(&ohmpi_lock);
    snprintf(ohmpi_activity, sizeof ohmpi_activity, "%s", what ? what : "");
    pthread_mutex_unlock(&ohmpi_lock);
}

void ohmpi_enter(const char *what) {
    double allowed = ohmpi_timeout;
    if (ohmpi_next_allowance > 0) {
        if (allowed > 0 && ohmpi_next_allowance > allowed) allowed = ohmpi_next_allowance;
        ohmpi_next_allowance = 0;
    }
    pthread_mutex_lock(&ohmpi_lock);
    snprintf(ohmpi_what, sizeof ohmpi_what, "%s", what ? what : "?");
    ohmpi_deadline = allowed;
    ohmpi_entered = ohmpi_now();
    ohmpi_waiting_sequence = ++ohmpi_sequence;
    pthread_mutex_unlock(&ohmpi_lock);
}

void ohmpi_leave(void) {
    pthread_mutex_lock(&ohmpi_lock);
    ohmpi_waiting_sequence = 0;
    pthread_mutex_unlock(&ohmpi_lock);
}

// Answers the other ranks' questions: where this rank is.
static void answer_queries(void) {
    for (;;) {
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, OHMPI_QUERY_TAG, ohmpi_notes, &flag, &status);
        if (!flag) return;
        int64_t asked = 0;
        MPI_Recv(&asked, 1, MPI_INT64_T, status.MPI_SOURCE, OHMPI_QUERY_TAG, ohmpi_notes, MPI_STATUS_IGNORE);
        ohmpi_answer answer;
        memset(&answer, 0, sizeof answer);
        answer.asked = asked;
        answer.step = ohmpi_step;
        pthread_mutex_lock(&ohmpi_lock);
        answer.sequence = ohmpi_waiting_sequence;
        snprintf(answer.label, sizeof answer.label, "%s", ohmpi_waiting_sequence ? ohmpi_what : ohmpi_activity);
        pthread_mutex_unlock(&ohmpi_lock);
        MPI_Send(&answer, (int)sizeof answer, MPI_BYTE, status.MPI_SOURCE, OHMPI_ANSWER_TAG, ohmpi_notes);
    }
}

// One look at the clock by the watching thread. A wait that comes within a second (or half its
// allowance) of its deadline asks every other rank where it is; at the deadline the job is
// aborted, naming the ranks that are not in the same collective: those that gave no answer
// (stopped, hung in a system call, or gone) and those that answered from elsewhere. So the
// abort comes at the deadline given, not a grace period later. A rank that learns that a
// lower-numbered rank waits in the same collective leaves the message to it for a second, so
// the job's last words are usually one line.
static struct {
    int64_t sequence;                  // the wait being asked about (0: none)
    int64_t payload;
    char *answered;                    // per rank: 0 no answer, 1 same collective, 2 elsewhere
    ohmpi_answer *answers;
} ohmpi_query;

static void watch(void) {
    answer_queries();
    pthread_mutex_lock(&ohmpi_lock);
    int64_t sequence = ohmpi_waiting_sequence;
    double waited = ohmpi_now() - ohmpi_entered, deadline = ohmpi_deadline;
    char what[sizeof ohmpi_what];
    memcpy(what, ohmpi_what, sizeof what);
    pthread_mutex_unlock(&ohmpi_lock);
    if (sequence == 0 || deadline <= 0) { ohmpi_query.sequence = 0; return; }
    double grace = deadline / 2 < 1 ? deadline / 2 : 1;
    if (waited < deadline - grace) return;
    if (ohmpi_query.sequence != sequence) {
        if (!ohmpi_query.answered) {
            ohmpi_query.answered = calloc((size_t)ohmpi_world, 1);
            ohmpi_query.answers = calloc((size_t)ohmpi_world, sizeof(ohmpi_answer));
        }
        memset(ohmpi_query.answered, 0, (size_t)ohmpi_world);
        ohmpi_query.answered[ohmpi_my_rank] = 1;
        ohmpi_query.sequence = sequence;
        ohmpi_query.payload = sequence;
        for (int r = 0; r < ohmpi_world; r++) {
            if (r == ohmpi_my_rank) continue;
            MPI_Request request;
            MPI_Isend(&ohmpi_query.payload, 1, MPI_INT64_T, r, OHMPI_QUERY_TAG, ohmpi_notes, &request);
            MPI_Request_free(&request);
        }
    }
    for (;;) {
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, OHMPI_ANSWER_TAG, ohmpi_notes, &flag, &status);
        if (!flag) break;
        ohmpi_answer answer;
        MPI_Recv(&answer, (int)sizeof answer, MPI_BYTE, status.MPI_SOURCE, OHMPI_ANSWER_TAG, ohmpi_notes, MPI_STATUS_IGNORE);
        if (answer.asked != sequence) continue;               // an answer to an earlier question
        answer.label[sizeof answer.label - 1] = 0;
        // Waiting in a collective (this one, or another that is blocked on the same rank: a
        // collective completes on some ranks before others), or busy outside collectives.
        ohmpi_query.answered[status.MPI_SOURCE] = answer.sequence != 0 ? 1 : 2;
        ohmpi_query.answers[status.MPI_SOURCE] = answer;
    }
    if (waited < deadline) return;
    for (int r = 0; r < ohmpi_my_rank; r++)
        if (ohmpi_query.answered[r] == 1 && waited < deadline + 1) return;    // rank r will say it
    // The ranks that did not arrive: those that gave no answer, and those busy elsewhere.
    char missing[4096] = "";
    size_t used = 0;
    int count = 0, elsewhere = 0;
    for (int r = 0; r < ohmpi_world && used < sizeof missing - 320; r++) {
        if (ohmpi_query.answered[r] == 1) {
            if (ohmpi_query.answers[r].sequence != sequence && r != ohmpi_my_rank) elsewhere++;
            continue;
        }
        char detail[300];
        if (ohmpi_query.answered[r] == 0) {
            snprintf(detail, sizeof detail, "no answer: stopped, hung or gone");
        } else {
            char at[48] = "";
            if (ohmpi_query.answers[r].step >= 0) snprintf(at, sizeof at, ", at step %lld", (long long)ohmpi_query.answers[r].step);
            snprintf(detail, sizeof detail, "busy: %s%s", ohmpi_query.answers[r].label, at);
        }
        used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%d (%s)", count ? ", " : "", r, detail);
        count++;
    }
    char message[5120];
    char step[64] = "";
    if (ohmpi_step >= 0) snprintf(step, sizeof step, " at step %lld", (long long)ohmpi_step);
    snprintf(message, sizeof message,
             "error: collective '%s'%s waited more than %.0f s (%s); ranks that did not arrive: %s%s",
             what, step, deadline, deadline > ohmpi_timeout ? "--io-timeout" : "--collective-timeout",
             count ? missing : "none: every rank waits in a collective, not all in the same one",
             count && elsewhere ? "; the others wait in collectives" : "");
    ohmpi_abort(message, 4);
}

// A watching thread whose own pauses took far longer than asked was not running: the process
// was stopped (SIGSTOP, a debugger) or starved. The wait's clock restarts, so that a rank
// continued after a stop does not blame the others for the time it was stopped.
static void restart_if_stopped(double gap) {
    if (gap < 2) return;
    pthread_mutex_lock(&ohmpi_lock);
    ohmpi_entered = ohmpi_now();
    pthread_mutex_unlock(&ohmpi_lock);
    ohmpi_query.sequence = 0;
}

static void *watchdog(void *unused) {
    (void)unused;
    double last = ohmpi_now();
    for (;;) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&ohmpi_watch_lock);
        if (ohmpi_watch_stopped) { pthread_mutex_unlock(&ohmpi_watch_lock); return NULL; }
        double t = ohmpi_now();
        restart_if_stopped(t - last);
        last = t;
        watch();
        pthread_mutex_unlock(&ohmpi_watch_lock);
    }
}


int ohmpi_watchdog_start(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, watchdog, NULL) != 0) return 0;
    pthread_detach(thread);
    ohmpi_watch_running = 1;
    return 1;
}

void ohmpi_watchdog_stop(void) {
    if (!ohmpi_watch_running) return;
    pthread_mutex_lock(&ohmpi_watch_lock);
    ohmpi_watch_stopped = 1;
    pthread_mutex_unlock(&ohmpi_watch_lock);
    ohmpi_watch_running = 0;
}

// Polls a non-blocking collective until it completes, watching the clock meanwhile (no watchdog
// thread without MPI_THREAD_MULTIPLE).
static void wait_for(MPI_Request *request, const char *what) {
    int done = 0;
    ohmpi_enter(what);
    ohmpi_check(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
    double start = ohmpi_now(), looked = start;
    unsigned spins = 0;
    while (!done) {
        ohmpi_check(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
        if (done) break;
        if (++spins % 1024 == 0) {
            double t = ohmpi_now();
            if (t - looked > 0.05) { restart_if_stopped(t - looked); watch(); looked = t; }
            // Long waits (a slow peer) give the core away now and then instead of spinning hard.
            if (t - start > 0.01) sched_yield();
        }
    }
    ohmpi_leave();
}

void ohmpi_call(ohmpi_collective start, void *args, const char *call, const char *what, int watched) {
    if (!watched) {
        ohmpi_check(start(args, NULL), call, what);
    } else if (ohmpi_threaded) {
        ohmpi_enter(what);
        ohmpi_check(start(args, NULL), call, what);
        ohmpi_leave();
    } else {
        MPI_Request request;
        ohmpi_check(start(args, &request), call, what);
        wait_for(&request, what);
    }
}
