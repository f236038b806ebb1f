/*
 * swarm-init: the minimal init a task with `init: true` runs as PID 1, before its command
 * (as Docker's docker-init, tini). PID 1 of a PID namespace inherits every orphan, and the
 * kernel delivers it only the signals it handles: a command that is no init leaves
 * zombies and ignores SIGTERM. This one runs the command as its child, forwards every
 * signal it gets to it, reaps every child that exits, and exits with the command's status
 * (128 + the signal when a signal ended it), the rest of the namespace going with it.
 *
 * With `--tty` (a service's `tty: true`, Docker's TTY) the command runs on a terminal of
 * the container's own /dev/pts, as its controlling terminal, and this process copies what
 * the terminal prints to its own stdout, the task's log. It lives as long as the
 * container, so the terminal needs no holder on the node (Docker's shim) and survives a
 * restart of the daemon.
 *
 * With `--stdin-open` (`stdin_open: true`, Docker's OpenStdin) the command's stdin is a
 * pipe this process keeps open and never writes: a read waits, where /dev/null would end
 * a shell at once. On a terminal it is the terminal, which never ends either.
 *
 * Static, with no dependency but the C library linked in: the image may have no libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* Signals a fault of this process raises: never blocked, or a fault would hang it. */
static const int synchronous[] = {SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGSYS, SIGTRAP};

/* Writes all of `data` to stdout (the log file). */
static void write_out(const char *data, ssize_t size) {
    while (size > 0) {
        ssize_t written = write(STDOUT_FILENO, data, (size_t)size);
        if (written < 0 && errno == EINTR) {
            continue;
        }
        if (written <= 0) {
            return; /* The log is gone: what the terminal prints is dropped, as a full pipe's. */
        }
        data += written;
        size -= written;
    }
}

/* Copies what the terminal has printed, `reads` reads of it at most (0: until it has
 * nothing more now): a command that prints without pause cannot hold signals back. */
static void copy_terminal(int terminal, int reads) {
    char buffer[16384];
    for (int done = 0; reads == 0 || done < reads; done++) {
        ssize_t size = read(terminal, buffer, sizeof buffer);
        if (size < 0 && errno == EINTR) {
            continue;
        }
        if (size <= 0) {
            return; /* EAGAIN: nothing more now. */
        }
        write_out(buffer, size);
    }
}

/* Reaps every exited child; returns the command's exit code once it has exited, else -1. */
static int reap(pid_t command) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) {
            return -1;
        }
        if (pid == command) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
    }
}

int main(int argc, char **argv) {
    int first = 1;
    int tty = 0, stdin_open = 0;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first++) {
        if (strcmp(argv[first], "--tty") == 0) {
            tty = 1;
        } else if (strcmp(argv[first], "--stdin-open") == 0) {
            stdin_open = 1;
        } else if (strcmp(argv[first], "--") == 0) {
            first++;
            break;
        } else {
            break; /* The command's own, as in `swarm-init --version`. */
        }
    }
    if (first >= argc) {
        fprintf(stderr, "swarm-init: no command to run\n");
        return 2;
    }

    /* Every signal is blocked and taken with sigwaitinfo (with a terminal, read from a
     * signalfd): a blocked signal reaches PID 1 even without a handler, and none is lost
     * between two waits. */
    sigset_t waited, previous;
    sigfillset(&waited);
    for (size_t i = 0; i < sizeof synchronous / sizeof synchronous[0]; i++) {
        sigdelset(&waited, synchronous[i]);
    }
    if (sigprocmask(SIG_SETMASK, &waited, &previous) != 0) {
        perror("swarm-init: sigprocmask");
        return 1;
    }

    /* The terminal's two ends. This process keeps the command's end open too: the other
     * end then never reads as hung up, even before the command has opened its own, and
     * what the command printed last is still there to read after it exits. */
    int terminal = -1, held = -1;
    const char *terminal_path = NULL;
    if (tty) {
        terminal = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (terminal < 0 || grantpt(terminal) != 0 || unlockpt(terminal) != 0 ||
            (terminal_path = ptsname(terminal)) == NULL ||
            (held = open(terminal_path, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
            perror("swarm-init: a terminal for the command (is /dev/pts mounted?)");
            return 1;
        }
    }

    /* The command's stdin, whose writing end this process holds and never writes. */
    int input[2] = {-1, -1};
    if (stdin_open && !tty && pipe2(input, O_CLOEXEC) != 0) {
        perror("swarm-init: a stdin for the command");
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
        if (tty) {
            /* Its own session, the terminal its controlling one and its stdio. */
            int own = -1;
            if (setsid() < 0 || (own = open(terminal_path, O_RDWR)) < 0 ||
                ioctl(own, TIOCSCTTY, 0) < 0 || dup2(own, STDIN_FILENO) < 0 ||
                dup2(own, STDOUT_FILENO) < 0 || dup2(own, STDERR_FILENO) < 0) {
                perror("swarm-init: the command's terminal");
                _exit(126);
            }
            if (own > STDERR_FILENO) {
                close(own);
            }
        } else if (input[0] >= 0 && dup2(input[0], STDIN_FILENO) < 0) {
            perror("swarm-init: the command's stdin");
            _exit(126);
        }
        execvp(argv[first], &argv[first]);
        int error = errno;
        fprintf(stderr, "swarm-init: cannot run %s: %s\n", argv[first], strerror(error));
        /* The shell's codes: not found, or found and not runnable. */
        _exit(error == ENOENT ? 127 : 126);
    }

    if (tty) {
        /* Signals and the terminal's output, in one poll. */
        int signals = signalfd(-1, &waited, SFD_CLOEXEC);
        if (signals < 0 || fcntl(terminal, F_SETFL, O_NONBLOCK) < 0) {
            perror("swarm-init: signalfd");
            kill(command, SIGKILL);
            return 1;
        }
        struct pollfd watched[2] = {{.fd = signals, .events = POLLIN},
                                    {.fd = terminal, .events = POLLIN}};
        for (;;) {
            if (poll(watched, 2, -1) < 0) {
                continue; /* EINTR */
            }
            if (watched[1].revents != 0) {
                copy_terminal(terminal, 16);
            }
            if (watched[0].revents == 0) {
                continue;
            }
            struct signalfd_siginfo info;
            if (read(signals, &info, sizeof info) != sizeof info) {
                continue;
            }
            if (info.ssi_code == SI_USER && info.ssi_pid == (uint32_t)getpid()) {
                continue; /* Its own write's (SIGXFSZ at a file size limit): not the command's. */
            }
            if (info.ssi_signo != SIGCHLD) {
                kill(command, (int)info.ssi_signo);
                continue;
            }
            int code = reap(command);
            if (code >= 0) {
                copy_terminal(terminal, 0);
                return code;
            }
        }
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
        int code = reap(command);
        if (code >= 0) {
            return code;
        }
    }
}
