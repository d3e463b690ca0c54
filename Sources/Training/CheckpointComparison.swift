/// Largest absolute differences between two checkpoints, per tensor group (`param`, `mask`,
/// `momentum`, `bn`, … — the part of a tensor's name before `/`).
///
/// A non-finite value on either side never matches (NaN ≠ NaN, and Inf − Inf is NaN): its
/// difference is +∞, so a checkpoint that diverged never compares equal to anything.
public struct CheckpointComparison {
    /// Group → max |a − b|.
    public private(set) var worst: [String: Double] = [:]
    /// Non-finite values in the first and in the second checkpoint.
    public private(set) var nonFinite = (first: 0, second: 0)

    public var overall: Double { worst.values.max() ?? 0 }

    public init(_ a: Checkpoint, _ b: Checkpoint) throws {
        guard a.tensors.map(\.name).sorted() == b.tensors.map(\.name).sorted() else {
            throw ConfigError("the checkpoints hold different tensors (different models)")
        }
        for t in a.tensors {
            let u = b.tensor(t.name)!
            guard u.count == t.values.count else { throw ConfigError("\(t.name) has different sizes") }
            var d = 0.0
            for (x, y) in zip(t.values, u) {
                if !x.isFinite { nonFinite.first += 1 }
                if !y.isFinite { nonFinite.second += 1 }
                d = x.isFinite && y.isFinite ? max(d, Double(abs(x - y))) : .infinity
            }
            let group = String(t.name.prefix { $0 != "/" })
            worst[group] = max(worst[group] ?? 0, d)
        }
    }
}
