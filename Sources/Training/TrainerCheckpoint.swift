import Foundation
import NN
import Sparsity

/// The run's state on disk: what a checkpoint holds, and loading it back.
extension Trainer {
    /// The full training state as a checkpoint.
    public func checkpoint() -> Checkpoint {
        let store = network.store
        var ck = Checkpoint()
        for p in store.parameters {
            let r = p.ref.offset..<(p.ref.offset + p.ref.count)
            ck.tensors.append(("param/" + p.name, p.shape, Array(store.values[r])))
            ck.tensors.append(("momentum/" + p.name, p.shape, store.momentum(p.ref)))
            if p.maskable { ck.tensors.append(("mask/" + p.name, p.shape, Array(store.mask[r]))) }
        }
        for bn in network.batchNorms {
            ck.tensors.append(("bn/\(bn.name).running_mean", [bn.channels], bn.runningMean))
            ck.tensors.append(("bn/\(bn.name).running_var", [bn.channels], bn.runningVar))
        }
        for t in policy.stateTensors(masks: masks) { ck.tensors.append(t) }
        for t in store.transform?.stateTensors(store) ?? [] { ck.tensors.append(t) }
        ck.metadata = [
            "format": "sparsetrain-checkpoint-1", "model": config.model, "epoch": "\(completedEpochs)",
            "algorithm": config.algorithm, "mask_generation": "\(masks.generation)",
            "step": "\(completedEpochs * trainShards.batchesPerEpoch)", "ranks": "\(comm.size)",
            "seed": "\(config.seed)", "rng": "data order, augmentation and masks derive from (seed, epoch)",
            "config": config.yaml(),
            "class_names": data.train.classNames.joined(separator: "\n"),
            "kernel_choices": network.ctx.kernelChoicesText,
        ]
        if let partialEpoch, let json = try? JSONEncoder().encode(partialEpoch) {
            ck.metadata[EpochProgress.metadataKey] = String(decoding: json, as: UTF8.self)
        }
        // The masks were written out for it; sparse weights' masks go back to their positions.
        store.releaseMaskPages()
        return ck
    }

    /// Rank 0: the run's checkpoint, keeping the previous one.
    func writeCheckpoint() throws {
        try checkpoint().write(to: runDirectory + "/" + Self.checkpointName,
                               keepingPreviousAt: runDirectory + "/" + Self.previousCheckpointName)
        onCheckpointSaved?()
    }

    public func saveCheckpoint(to path: String) throws {
        try checkpoint().write(to: path)
    }

    /// Loads weights, momentum, masks and BN statistics; returns the epochs completed.
    func restore(_ ck: Checkpoint, path: String) throws -> Int {
        try load(ck, path: path)
        guard let epoch = Int(ck.metadata["epoch"] ?? ""), epoch >= 0 else {
            throw ConfigError("\(path): checkpoint has no valid epoch (\(ck.metadata["epoch"] ?? "missing"))")
        }
        guard epoch <= config.totalEpochs else {
            throw ConfigError("\(path): the checkpoint is at epoch \(epoch), past the run's \(config.totalEpochs) epochs")
        }
        if let text = ck.metadata[EpochProgress.metadataKey] {
            guard let partial = try? JSONDecoder().decode(EpochProgress.self, from: Data(text.utf8)), partial.epoch == epoch,
                  partial.steps > 0, partial.steps < trainShards.batchesPerEpoch else {
                throw ConfigError("\(path): its record of a stopped epoch does not fit this run")
            }
            partialEpoch = partial
        }
        if let ranks = Int(ck.metadata["ranks"] ?? ""), ranks != comm.size, comm.rank == 0 {
            logger.warning("resuming a \(ranks)-rank run on \(comm.size) ranks: the data order changes from here on")
        }
        return epoch
    }

    /// Copies a checkpoint's tensors into the network; every tensor must match by name and size.
    public func load(_ ck: Checkpoint, path: String) throws {
        try ck.validateValues(path: path)
        if let names = ck.metadata["class_names"], names != data.train.classNames.joined(separator: "\n") {
            throw ConfigError("\(path): the model was trained on classes \(RunData.names(names.split(separator: "\n").map(String.init))), the data has \(RunData.names(data.train.classNames))")
        }
        let store = network.store
        func tensor(_ name: String, _ count: Int) throws -> [Float] {
            guard let v = ck.tensor(name) else { throw ConfigError("\(path): checkpoint lacks \(name) (was it made with another model?)") }
            guard v.count == count else { throw ConfigError("\(path): \(name) has \(v.count) values, the model needs \(count) (another model?)") }
            return v
        }
        func copy(_ name: String, _ count: Int, into dst: UnsafeMutablePointer<Float>) throws {
            try tensor(name, count).withUnsafeBufferPointer { dst.update(from: $0.baseAddress!, count: count) }
        }
        for p in store.parameters {
            try copy("param/" + p.name, p.ref.count, into: store.value(p.ref))
            try tensor("momentum/" + p.name, p.ref.count).withUnsafeBufferPointer { store.setMomentum(p.ref, from: $0.baseAddress!) }
            if p.maskable { try copy("mask/" + p.name, p.ref.count, into: store.maskValues(p.ref)) }
        }
        store.maskDidChange()
        // Rank 0's dense-or-sparse decisions: the resumed run takes the same kernel paths.
        network.ctx.kernelChoicesText = ck.metadata["kernel_choices"] ?? ""
        let expected = store.parameters.count * 2 + store.parameters.filter(\.maskable).count + network.batchNorms.count * 2
        let modelTensors = ck.tensors.filter { !Self.isPolicyTensor($0.name) }.count
        guard modelTensors == expected else {
            throw ConfigError("\(path): checkpoint has \(modelTensors) tensors, the model \(expected) (another model?)")
        }
        for bn in network.batchNorms {
            guard let mean = ck.tensor("bn/\(bn.name).running_mean"), let variance = ck.tensor("bn/\(bn.name).running_var"),
                  mean.count == bn.channels, variance.count == bn.channels
            else { throw ConfigError("\(path): checkpoint lacks the statistics of \(bn.name)") }
            bn.setRunningStatistics(mean: mean, variance: variance)
        }
        do { try store.transform?.restoreState(store) { ck.tensor($0) } } catch let e as SparsityError {
            throw ConfigError("\(path): \(e.description)")
        }
        if let epoch = Int(ck.metadata["epoch"] ?? ""), epoch > 0, epoch <= config.totalEpochs {
            policy.prepare(epoch: epoch - 1, store: store)
        }
        store.refreshEffective()
    }
}
