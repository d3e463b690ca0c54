#include "CMPIShim.h"

_Static_assert(sizeof(float) == 4, "MPI_FLOAT must be 4 bytes");
_Static_assert(sizeof(double) == 8, "MPI_DOUBLE must be 8 bytes");

MPI_Comm stmpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Comm stmpi_comm_null(void) { return MPI_COMM_NULL; }

MPI_Datatype stmpi_type_float(void) { return MPI_FLOAT; }
MPI_Datatype stmpi_type_double(void) { return MPI_DOUBLE; }
MPI_Datatype stmpi_type_int32(void) { return MPI_INT32_T; }
MPI_Datatype stmpi_type_int64(void) { return MPI_INT64_T; }
MPI_Datatype stmpi_type_uint8(void) { return MPI_UINT8_T; }

MPI_Op stmpi_op_sum(void) { return MPI_SUM; }
MPI_Op stmpi_op_max(void) { return MPI_MAX; }
MPI_Op stmpi_op_min(void) { return MPI_MIN; }

void *stmpi_in_place(void) { return MPI_IN_PLACE; }
MPI_Status *stmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
MPI_Request stmpi_request_null(void) { return MPI_REQUEST_NULL; }
MPI_Errhandler stmpi_errors_return(void) { return MPI_ERRORS_RETURN; }

int stmpi_success(void) { return MPI_SUCCESS; }
int stmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
int stmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
int stmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
