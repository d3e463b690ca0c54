import Foundation
import Training

/// One run directory as the report reads it: its resolved config and its per-epoch metrics.
public struct RunRecord {
    /// The fields of a metrics.jsonl epoch line the report uses.
    public struct Epoch: Decodable {
        public var epoch: Int
        public var test_acc: Double
        public var train_loss: Double
        public var test_loss: Double
        public var seconds: Double
        public var bytes_allreduced: Int
        public var bytes_broadcast: Int
        public var mask_changes: Int
        public var global_density: Double
        public var effective_density: Double?
    }

    public let directory: String
    public let config: TrainConfig
    public let epochs: [Epoch]

    /// Reads `directory/config.yaml` and the epoch lines of `directory/metrics.jsonl`.
    public init(directory: String) throws {
        self.directory = directory
        guard let yaml = try? String(contentsOfFile: directory + "/config.yaml", encoding: .utf8) else {
            throw ConfigError("\(directory): no config.yaml (not a run directory)")
        }
        config = try TrainConfig.parse(yaml: yaml)
        let text = (try? String(contentsOfFile: directory + "/metrics.jsonl", encoding: .utf8)) ?? ""
        let decoder = JSONDecoder()
        epochs = text.split(separator: "\n").compactMap { line in
            guard line.contains("\"test_acc\"") else { return nil }   // events have no accuracy
            return try? decoder.decode(Epoch.self, from: Data(line.utf8))
        }
        guard !epochs.isEmpty else { throw ConfigError("\(directory): metrics.jsonl holds no finished epoch") }
    }

    public var finalAccuracy: Double { epochs.last!.test_acc }
    public var bestAccuracy: Double { epochs.map(\.test_acc).max()! }
    /// Density the final network computes with (effective when a weight transform is used).
    public var finalDensity: Double { epochs.last!.effective_density ?? epochs.last!.global_density }
    public var wallSeconds: Double { epochs.reduce(0) { $0 + $1.seconds } }
    public var megabytesAllreduced: Double { Double(epochs.reduce(0) { $0 + $1.bytes_allreduced }) / 1e6 }
    public var kilobytesBroadcast: Double { Double(epochs.reduce(0) { $0 + $1.bytes_broadcast }) / 1e3 }
    public var maskChanges: Int { epochs.reduce(0) { $0 + $1.mask_changes } }

    /// Final sparsity the run aims at (its start for fixed masks).
    public var targetSparsity: Double { config.finalSparsity ?? config.sparsity }

    /// What the run is, without its seed: "resnet20 rigl balanced 0.9→0.99".
    public var label: String {
        var start = config.maskFrom == "none" ? config.densityMethod : "\(config.maskFrom) mask"
        if config.sparsity == 0 { start = "dense" }
        let s = String(format: "%g", config.sparsity), t = String(format: "%g", targetSparsity)
        return "\(config.model) \(config.algorithm) \(start) \(s == t ? s : "\(s)→\(t)")"
    }
}
