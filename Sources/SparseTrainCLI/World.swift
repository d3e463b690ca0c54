import Comm
import Foundation

/// Creates the world communicator, runs `body`, and turns any error into one line on stderr and
/// a non-zero exit, on every rank, without hanging the others.
///
/// Errors raised identically on every rank (count and layout mismatches, disagreements, bad
/// roots) end the job cleanly; any other error on one rank aborts the whole job, since the other
/// ranks may be waiting in a collective that will never complete.
func withWorld(_ body: (Communicator) throws -> Void) -> Never {
    let world: Communicator
    do {
        world = try makeWorldCommunicator()
    } catch {
        fail("cannot start MPI: \(error)")
    }
    do {
        try body(world)
    } catch let error as CommError where error.raisedOnEveryRank {
        if world.rank == 0 { printError("\(error)") }
        (world as? MPICommunicator)?.finalize()
        exit(1)
    } catch let error as RaisedOnEveryRank {
        if world.rank == 0 {
            if error.isError { printError("\(error)") } else { FileHandle.standardError.write(Data("\(error)\n".utf8)) }
        }
        (world as? MPICommunicator)?.finalize()
        exit(error.exitCode)
    } catch let failure as AgreedFailure {
        // Every rank knows (see `agreed`): the first failing rank reports, all finish cleanly.
        if let error = failure.report { printError("\(error)") }
        (world as? MPICommunicator)?.finalize()
        exit(1)
    } catch {
        printError(world.size > 1 ? "rank \(world.rank): \(error)" : "\(error)")
        if world.size > 1 { world.abort(code: 1) }
        exit(1)
    }
    (world as? MPICommunicator)?.finalize()
    exit(0)
}

extension CommError {
    /// True for errors that every rank detects together through a collective check.
    var raisedOnEveryRank: Bool {
        switch self {
        case .countMismatch, .invalidRoot, .disagreement, .layoutMismatch: return true
        case .mpi, .invalidArgument: return false
        }
    }
}

/// Prints "error: <message>" on one line; a message that quotes a huge input is cut short.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("error: \(shortened(message))\n".utf8))
}

/// `text` with newlines shown as spaces, at most `limit` characters.
func shortened(_ text: String, limit: Int = 1000) -> String {
    let line = text.replacingOccurrences(of: "\n", with: " ")
    guard line.count > limit else { return line }
    return String(line.prefix(limit)) + "… (\(line.count - limit) more characters)"
}

func fail(_ message: String) -> Never {
    printError(message)
    exit(1)
}

/// Seconds since an arbitrary start, monotonic.
func now() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
}

/// Median seconds of `runs` runs of `body`, after one untimed run.
func medianSeconds(runs: Int, _ body: () -> Void) -> Double {
    withoutActuallyEscaping(body) { interleavedMedianSeconds(runs: runs, [$0])[0] }
}

/// Median seconds of each body over `runs` rounds that run the bodies in turn (after one
/// untimed run of each), so that a machine's drift hits all of them alike.
func interleavedMedianSeconds(runs: Int, _ bodies: [() -> Void]) -> [Double] {
    for body in bodies { body() }
    var samples = [[Double]](repeating: [], count: bodies.count)
    for _ in 0..<runs {
        for (i, body) in bodies.enumerated() {
            let t0 = now()
            body()
            samples[i].append(now() - t0)
        }
    }
    return samples.map(median)
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Encodes `value` as one line of JSON with sorted keys.
func jsonLine<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

func fflushStdout() { fflush(nil) }  // nil flushes every output stream

/// A bad argument or input: printed by the argument parser as one line `Error: …`, exit code 1
/// (a `ValidationError` would add the whole usage text).
struct InputError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
