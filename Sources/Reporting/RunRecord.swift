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
        /// Global steps at the epoch's end, the masked layers in network order and their
        /// densities (absent in runs written before they were recorded).
        public var steps: Int?
        public var layers: [String]?
        public var layer_density: [String: Double]?
        public var effective_layer_density: [String: Double]?

        /// Density the network computes with at the epoch's end.
        public var density: Double { effective_density ?? global_density }
    }

    /// The fields of a metrics.jsonl mask-change line the report uses.
    public struct MaskChange: Decodable {
        public var step: Int
        public var density: Double?
        public var dropped: Int?
        public var grown: Int?
        public var kind: String?
    }

    public let directory: String
    public let config: TrainConfig
    public let epochs: [Epoch]
    public let maskChanges: [MaskChange]

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
        maskChanges = text.split(separator: "\n").compactMap { line in
            guard line.contains("\"mask_change\"") else { return nil }
            return try? decoder.decode(MaskChange.self, from: Data(line.utf8))
        }
        guard !epochs.isEmpty else { throw ConfigError("\(directory): metrics.jsonl holds no finished epoch") }
    }

    /// Whether the run has trained all its epochs.
    public var isComplete: Bool { epochs.last!.epoch >= config.totalEpochs }

    public var finalAccuracy: Double { epochs.last!.test_acc }
    public var bestAccuracy: Double { epochs.map(\.test_acc).max()! }
    /// Density the final network computes with (effective when a weight transform is used).
    public var finalDensity: Double { epochs.last!.effective_density ?? epochs.last!.global_density }
    public var wallSeconds: Double { epochs.reduce(0) { $0 + $1.seconds } }
    public var megabytesAllreduced: Double { Double(epochs.reduce(0) { $0 + $1.bytes_allreduced }) / 1e6 }
    public var kilobytesBroadcast: Double { Double(epochs.reduce(0) { $0 + $1.bytes_broadcast }) / 1e3 }
    public var maskChangeCount: Int { epochs.reduce(0) { $0 + $1.mask_changes } }

    /// Final density of each masked layer, in network order (empty for older runs).
    public var finalLayerDensities: [(layer: String, density: Double)] {
        guard let last = epochs.last, let layers = last.layers, let d = last.effective_layer_density ?? last.layer_density else { return [] }
        return layers.compactMap { name in d[name].map { (name, $0) } }
    }

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
