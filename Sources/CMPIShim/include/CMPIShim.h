#ifndef SPARSETRAIN_CMPISHIM_H
#define SPARSETRAIN_CMPISHIM_H
// OpenMPI defines its handles as macros over addresses of internal globals; Swift cannot import
// those. Each one is exposed here as a plain function. Prefix: stmpi_.
#include <mpi.h>

MPI_Comm stmpi_comm_world(void);
MPI_Comm stmpi_comm_null(void);

MPI_Datatype stmpi_type_float(void);
MPI_Datatype stmpi_type_double(void);
MPI_Datatype stmpi_type_int32(void);
MPI_Datatype stmpi_type_int64(void);
MPI_Datatype stmpi_type_uint8(void);

MPI_Op stmpi_op_sum(void);
MPI_Op stmpi_op_max(void);
MPI_Op stmpi_op_min(void);

void *stmpi_in_place(void);
MPI_Status *stmpi_status_ignore(void);
MPI_Request stmpi_request_null(void);
MPI_Errhandler stmpi_errors_return(void);

int stmpi_success(void);
int stmpi_max_error_string(void);
int stmpi_thread_funneled(void);
int stmpi_thread_multiple(void);

#endif
