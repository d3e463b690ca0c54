#include "CSignals.h"
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stsig_last = 0;

static void stsig_handle(int signo) { stsig_last = signo; }

void stsig_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = stsig_handle;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
}

int stsig_received(void) { return stsig_last; }
