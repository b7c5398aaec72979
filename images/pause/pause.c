/*
 * The first process of every pod sandbox on the local node. It only has to exist: the pod's
 * namespaces live as long as it does. It also reaps children re-parented to it (with a shared
 * PID namespace it is the pod's init), and exits 0 on SIGTERM or SIGINT.
 *
 * The three signals stay blocked and are taken with sigwaitinfo(): the kernel drops a signal
 * sent to a PID namespace's init when it has the default action, but never a blocked one, so
 * no handlers are needed and nothing runs in signal context.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
  sigset_t wanted;

  if (argc > 1 && strcmp(argv[1], "--version") == 0) {
    puts("iot-operator pause 1");
    return 0;
  }
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGTERM);
  sigaddset(&wanted, SIGINT);
  sigaddset(&wanted, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &wanted, NULL) != 0) {
    perror("pause: sigprocmask");
    return 1;
  }
  for (;;) {
    int sig = sigwaitinfo(&wanted, NULL);
    if (sig == SIGCHLD) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    } else if (sig == SIGTERM || sig == SIGINT) {
      return 0;
    } else if (sig < 0 && errno != EINTR) {
      perror("pause: sigwaitinfo");
      return 2;
    }
  }
}
