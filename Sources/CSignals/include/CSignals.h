#ifndef SPARSETRAIN_CSIGNALS_H
#define SPARSETRAIN_CSIGNALS_H
// Stop requests by signal: SIGTERM, SIGINT and SIGUSR1 (what Slurm's --signal, preemption and
// mpirun's forwarding send) only set a flag, which the training loop polls between steps.
// Prefix: stsig_.

/// Installs the handlers (idempotent).
void stsig_install(void);
/// The last stop signal received, 0 if none.
int stsig_received(void);
#endif
