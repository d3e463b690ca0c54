import ArgumentParser
import Foundation
import Comm
import Tensor

extension SparseTrain {
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the ranks, BLAS kernel and threads this process sees.")

        func run() throws {
            withWorld { comm in
                var line = "rank \(comm.rank)/\(comm.size)  host \(ProcessInfo.processInfo.hostName)  blas-core \(BLAS.coreName)  "
                line += "blas-threads \(BLAS.threads)"
                // Each rank prints its own line; a launcher may interleave them in any order.
                print(line)
                fflushStdout()
            }
        }
    }
}
