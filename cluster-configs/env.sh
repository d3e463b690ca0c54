# Environment for sparsetrain ranks. Source it in batch scripts before mpirun/srun.
#   THREADS_PER_RANK: OpenBLAS threads (and parallel loops) per rank. Ranks x threads should
#   equal the cores of a node: e.g. 32 cores -> 32 ranks x 1 thread, or 8 ranks x 4 threads.
#   Fewer ranks with more threads reduce gradient traffic; more ranks keep cores busier in the
#   small layers. Measure both with `sparsetrain bench` before long runs.
export THREADS_PER_RANK=${THREADS_PER_RANK:-1}
export OPENBLAS_NUM_THREADS=$THREADS_PER_RANK
# Keep large buffers mapped between steps: glibc otherwise returns and re-faults them, which
# makes large allreduces 2-3x slower.
export MALLOC_MMAP_MAX_=0
export MALLOC_TRIM_THRESHOLD_=4294967296
