/*
 * swarm-init: the minimal init a task with `init: true` runs as PID 1, before its command
 * (as Docker's docker-init, tini). PID 1 of a PID namespace inherits every orphan, and the
 * kernel delivers it only the signals it handles: a command that is no init leaves
 * zombies and ignores SIGTERM. This one runs the command as its child, forwards every
 * signal it gets to it, reaps every child that exits, and exits with the command's status
 * (128 + the signal when a signal ended it), the rest of the namespace going with it.
 *
 * Static, with no dependency but the C library linked in: the image may have no libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Signals a fault of this process raises: never blocked, or a fault would hang it. */
static const int synchronous[] = {SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGSYS, SIGTRAP};

int main(int argc, char **argv) {
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--") == 0) {
        first = 2;
    }
    if (first >= argc) {
        fprintf(stderr, "swarm-init: no command to run\n");
        return 2;
    }

    /* Every signal is blocked and taken with sigwaitinfo: a blocked signal reaches PID 1
     * even without a handler, and none is lost between two waits. */
    sigset_t waited, previous;
    sigfillset(&waited);
    for (size_t i = 0; i < sizeof synchronous / sizeof synchronous[0]; i++) {
        sigdelset(&waited, synchronous[i]);
    }
    if (sigprocmask(SIG_SETMASK, &waited, &previous) != 0) {
        perror("swarm-init: sigprocmask");
        return 1;
    }

    pid_t command = fork();
    if (command < 0) {
        perror("swarm-init: fork");
        return 1;
    }
    if (command == 0) {
        /* The command starts with the signal mask this process was given. */
        sigprocmask(SIG_SETMASK, &previous, NULL);
        execvp(argv[first], &argv[first]);
        int error = errno;
        fprintf(stderr, "swarm-init: cannot run %s: %s\n", argv[first], strerror(error));
        /* The shell's codes: not found, or found and not runnable. */
        _exit(error == ENOENT ? 127 : 126);
    }

    for (;;) {
        siginfo_t info;
        int signal = sigwaitinfo(&waited, &info);
        if (signal < 0) {
            continue; /* EINTR: a stop and continue of this process. */
        }
        if (signal != SIGCHLD) {
            kill(command, signal);
            continue;
        }
        /* One SIGCHLD may stand for several exits: reap until none is left. */
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) {
                break;
            }
            if (pid == command) {
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
        }
    }
}
