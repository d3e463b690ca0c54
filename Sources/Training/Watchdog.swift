import Foundation

/// Ends this rank when training stops making progress: a peer that hangs (or is stopped) leaves
/// the others waiting inside a collective forever, spinning. The loop beats after every step
/// (and evaluation batch); a thread checks every half second that the last beat is younger than
/// the deadline `max(floor, multiple × median step)`, extended by `expectDelay` around long
/// operations (checkpoints, mask changes) by a multiple of the floor. On expiry it prints one line naming the rank and where
/// it was, and exits; the launcher then ends the other ranks.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var lastBeat = Date()
    private var place = "start"
    private var grace: TimeInterval = 0
    private var steps: [Double] = []
    private let rank: Int, floor: TimeInterval, multiple: Double
    private var running = false

    /// `floor` seconds at least; 0 turns the watchdog off.
    init(rank: Int, floor: TimeInterval, multiple: Double = 20) {
        self.rank = rank
        self.floor = floor
        self.multiple = multiple
    }

    /// Starts the checking thread (once).
    func start() {
        lock.lock()
        defer { lock.unlock() }
        guard floor > 0, !running else { return }
        running = true
        lastBeat = Date()
        let thread = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 0.5)
                guard isRunning else { return }
                if let message = expired() {
                    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
                    exit(1)
                }
            }
        }
        thread.start()
    }

    /// Stops the checking thread: the run is over (a grid's next run has its own watchdog).
    func stop() {
        lock.lock()
        defer { lock.unlock() }
        running = false
    }

    var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return running
    }

    /// Progress at `place`; `stepSeconds` feeds the median step time.
    func beat(_ place: String, stepSeconds: Double? = nil) {
        lock.lock()
        defer { lock.unlock() }
        lastBeat = Date()
        self.place = place
        grace = 0
        if let stepSeconds {
            steps.append(stepSeconds)
            if steps.count > 64 { steps.removeFirst(steps.count - 64) }
        }
    }

    /// The next beat may come up to `floors` more floors later than usual (a long operation
    /// on one rank that the others wait for: a checkpoint written by rank 0, a mask decided there).
    func expectDelay(floors: Double, at place: String) {
        lock.lock()
        defer { lock.unlock() }
        lastBeat = Date()
        self.place = place
        grace = floors * floor
    }

    /// Seconds without progress allowed now.
    var deadline: TimeInterval {
        let sorted = steps.sorted()
        let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        return max(floor, multiple * median) + grace
    }

    /// A message when the deadline has passed, else nil.
    func expired(now: Date = Date()) -> String? {
        lock.lock()
        defer { lock.unlock() }
        let idle = now.timeIntervalSince(lastBeat), limit = deadline
        guard idle > limit else { return nil }
        return String(format: "rank %d made no progress for %.0f s (deadline %.0f s) after %@: another rank is hung or gone; ending the job (watchdog_seconds sets the floor)", rank, idle, limit, place)
    }
}
