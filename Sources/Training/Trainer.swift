import Comm
import Datasets
import Foundation
import Logging
import NN
import Sparsity
import Tensor

/// One epoch's numbers, as written to `metrics.jsonl`.
/// Accuracy and densities describe the network at the end of the epoch's training, before a mask
/// change that follows its last step (that change is among the epoch's events and counts).
public struct EpochMetrics: Codable, Sendable {
    public var epoch: Int
    /// Global steps completed at the end of the epoch.
    public var steps: Int
    public var lr: Double
    public var train_loss: Double
    public var train_acc: Double
    public var test_loss: Double
    public var test_acc: Double
    public var test_top5: Double
    public var images_per_second: Double
    public var seconds: Double
    public var bytes_allreduced: Int
    /// Of those, bytes of dense-gradient allreduces (RiGL update steps).
    public var bytes_dense_gradient: Int
    /// Bytes of masks broadcast by rank 0 and the number of mask changes this epoch.
    public var bytes_broadcast: Int
    public var mask_changes: Int
    /// The LR schedule's phase ("training", "imp cycle 2/4", "imp final retrain").
    public var phase: String
    public var global_density: Double
    public var layer_density: [String: Double]
    /// Density of the weights the model computes with: the mask's, or under STR / edge-popup the
    /// non-zero effective weights' (the realised sparsity is 1 − this).
    public var effective_density: Double
    public var effective_layer_density: [String: Double]
    /// The masked layers in network order (the keys of the density maps).
    public var layers: [String]
}

/// A sparse-to-sparse training run over the ranks of a communicator.
///
/// Rank 0 draws the ER mask and the initial weights and broadcasts them (masks bit-packed);
/// every step reduces gradients with the packed masked reducer, whose buckets start during
/// backward; the algorithm's policy decides when the mask changes and rank 0 proposes each change,
/// which `MaskChangePath` broadcasts and applies on every rank. Checksums of masks and weights are
/// compared across ranks at the start, after every mask change and after every epoch. Only rank 0
/// writes files and prints progress.
public final class Trainer {
    public let config: TrainConfig
    public let network: Network
    public let layers: [MaskableLayer]
    let comm: Communicator
    let logger: Logger
    let data: RunData
    let loss: SoftmaxCrossEntropy
    let sgd: SGD
    let trainShards: Sharding
    let loader: DataLoader
    let policy: MaskPolicy
    /// Built by `prepare()`, once the initial mask is in place.
    public private(set) var masks: MaskState!
    public private(set) var step: TrainingStep!
    var changes: MaskChangePath!
    /// Epochs completed (resumed runs start after it).
    public private(set) var completedEpochs = 0
    public private(set) var history: [EpochMetrics] = []
    /// Every mask change of this process's run, in order.
    public private(set) var events: [MaskEvent] = []
    /// Lines for `metrics.jsonl` written with the next epoch's line (events of that epoch).
    private var pendingLines: [Data] = []
    var resumed = false
    /// The checkpoint a resumed run started from (its policy state is read in `prepare()`).
    private var resumeCheckpoint: Checkpoint?
    /// Rank 0's layer densities for the initial mask (computed before any collective).

    public var runDirectory: String { config.output }
    /// Called on rank 0 after each checkpoint is written.
    public var onCheckpointSaved: (() -> Void)?
    /// Polled every step (each rank); when it returns true on any rank, every rank stops after
    /// the same step, the checkpoint is written and `run` throws `StoppedBySignal`.
    public var stopRequested: (() -> Bool)?
    /// The partial epoch a stopped run saved, or that a resumed run continues.
    var partialEpoch: EpochProgress?
    /// Ends the job when this rank stops making progress (a hung peer).
    lazy var watchdog = Watchdog(rank: comm.rank, floor: config.watchdogSeconds)
    public static let checkpointName = "checkpoint.safetensors"
    /// The checkpoint before the last one, kept in case the last is damaged.
    public static let previousCheckpointName = "checkpoint.prev.safetensors"

    /// Builds the model and the data, without talking to other ranks (so a failure here can be
    /// agreed on before any collective). With `resume`, loads the state saved in the run
    /// directory's checkpoint. Call `prepare()` next.
    public init(config: TrainConfig, communicator: Communicator, resume: Bool = false, logger: Logger) throws {
        try config.validate(worldSize: communicator.size)
        self.config = config
        self.comm = communicator
        self.logger = logger
        guard let modelName = ModelName(rawValue: config.model) else {
            throw ConfigError("unknown model '\(config.model)'; models: \(ModelName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let input = try Self.inputShape(config, modelName)
        data = try RunData.make(config, input: input)
        trainShards = Sharding(count: data.train.count, batchSize: config.batchSize / communicator.size,
                               rank: communicator.rank, worldSize: communicator.size, seed: UInt64(config.seed))
        guard trainShards.batchesPerEpoch > 0 else {
            throw ConfigError("the training set (\(data.train.count) images) is smaller than one global batch (\(config.batchSize))")
        }
        let transform: ((ParameterStore) -> WeightTransform)?
        switch config.algorithm {
        case "str":
            let sInit = Float(Self.strInitialThreshold(config, stepsPerEpoch: trainShards.batchesPerEpoch))
            transform = { SoftThreshold(store: $0, initial: sInit) }
        case "edge-popup":
            transform = { EdgePopupScores(store: $0) }
        default:
            transform = nil
        }
        do {
            network = try buildModel(modelName, classes: config.classes, input: input, hidden: config.hidden,
                                     baseWidth: config.width ?? 16, seed: UInt64(config.seed),
                                     batchNormAffine: config.algorithm != "edge-popup", transform: transform)
        } catch let e as ModelError {
            throw ConfigError(e.description)
        }
        network.setThreads(config.threads)
        network.ctx.convolutionAlgorithm = ConvolutionAlgorithm(rawValue: config.convolution) ?? .automatic
        layers = MaskableLayer.all(in: network.store)
        loss = SoftmaxCrossEntropy(labelSmoothing: Float(config.labelSmoothing))
        sgd = SGD(momentum: Float(config.momentum), nesterov: config.nesterov, weightDecay: Float(config.weightDecay))
        policy = try makeMaskPolicy(config, stepsPerEpoch: trainShards.batchesPerEpoch, network: network)
        loader = DataLoader(dataset: data.train, transform: data.trainTransform, depth: 4, threads: config.dataThreads)
        if config.bn == "sync" && communicator.size > 1 {
            for bn in network.batchNorms {
                bn.crossReplicaCount = communicator.size
                bn.crossReplicaSum = { [comm = communicator] sums in try? comm.allreduce(&sums, op: .sum, counts: .trusted) }
            }
        }
        let latest = resume ? try Self.latestCheckpoint(in: runDirectory, logger: communicator.rank == 0 ? logger : nil) : nil
        if resume && latest == nil && communicator.rank == 0 {
            logger.warning("\(runDirectory) has no checkpoint yet (the run stopped before its first checkpoint): starting it from the beginning")
        }
        if let (path, ck) = latest {
            completedEpochs = try restore(ck, path: path)
            resumeCheckpoint = ck
            resumed = true
        } else if communicator.rank == 0 {
            if config.maskFrom != "none" {
                try pruneAtInitialization()
            } else {
                try drawInitialMask(densities: try computeDensities())
            }
            try checkConnectivity()
        }
    }

    /// The collective part of setting up, called on every rank after `init` succeeded on every
    /// rank: rank 0's mask and weights go to all ranks (unless resumed), masks and weights are
    /// compared across ranks, the mask state, the training step (with its gradient reducer) and
    /// the mask-change path are built, and the policy starts (or takes its saved state back).
    public func prepare() throws {
        if !resumed { try drawInitialState() }
        try MaskSync.verifyAgreement(UnsafeBufferPointer(network.store.mask), segments: network.store.segments,
                                     what: "mask", maskedOnly: true, communicator: comm)
        try MaskSync.verifyAgreement(UnsafeBufferPointer(network.store.values), segments: network.store.segments,
                                     what: "weights", maskedOnly: false, communicator: comm)
        masks = MaskState(store: network.store, generation: resumeCheckpoint.flatMap { Int($0.metadata["mask_generation"] ?? "") } ?? 0)
        // Scoring (SNIP, Synflow) is done: masked layers may now run sparse.
        network.ctx.sparseKernels = SparseKernelMode(rawValue: config.sparseKernels) ?? .off
        step = try TrainingStep(network: network, masks: masks, communicator: comm, loss: loss, sgd: sgd, threads: config.threads,
                                communicationThread: CommunicationThreadMode(rawValue: config.commThread) ?? .auto)
        changes = MaskChangePath(masks: masks, communicator: comm, step: step)
        if let ck = resumeCheckpoint {
            try policy.restoreState({ ck.tensor($0) }, masks: masks)
            resumeCheckpoint = nil
        } else {
            policy.begin(masks: masks)
        }
    }

    /// The LR schedule of `phase`: the configured schedule over the phase's epochs.
    func schedule(of phase: SchedulePhase) -> LearningRateSchedule {
        let length = Double(phase.length)
        return LearningRateSchedule(base: Float(config.lr), kind: Self.lrKind(config, epochs: length), epochs: length,
                                    warmupEpochs: config.warmupEpochs)
    }

    /// The configured schedule's shape over a run of `epochs`.
    static func lrKind(_ config: TrainConfig, epochs: Double) -> LearningRateSchedule.Kind {
        switch config.schedule {
        case "multistep": return .multiStep(milestones: config.milestones.map { $0 * epochs }, gamma: Float(config.gamma))
        case "cosine": return .cosine(minimum: Float(config.minLR))
        default: return .constant
        }
    }

    /// STR's initial threshold parameter: `str_s_init`, or the value that switches the threshold
    /// on at the paper's fraction of training given this run's Σ η (see `STRPolicy`).
    static func strInitialThreshold(_ config: TrainConfig, stepsPerEpoch: Int) -> Double {
        if let s = config.strSInit { return s }
        let total = config.totalEpochs
        let rates = LearningRateSchedule(base: Float(config.lr), kind: lrKind(config, epochs: Double(total)),
                                         epochs: Double(total), warmupEpochs: config.warmupEpochs)
        var sum = 0.0
        for e in 0..<total {
            for s in 0..<stepsPerEpoch { sum += Double(rates.rate(atEpoch: Double(e) + Double(s + 1) / Double(stepsPerEpoch))) }
        }
        return STRPolicy.initialThreshold(learningRateSum: sum, momentum: config.momentum)
    }

    static func inputShape(_ c: TrainConfig, _ model: ModelName) throws -> (channels: Int, height: Int, width: Int) {
        guard !c.input.isEmpty else { return model.defaultInput }
        let parts = c.input.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 3, parts.allSatisfy({ $0 > 0 }) else {
            throw ConfigError("input must look like 3x32x32, got '\(c.input)'")
        }
        return (parts[0], parts[1], parts[2])
    }

    /// Per-layer densities of the configured method; pruner-based methods score the initial
    /// weights (Synflow: data-free; SNIP: the first training batches of this rank) or read a
    /// checkpoint's masks (IMP).
    func computeDensities() throws -> [Double] {
        let density = 1 - config.sparsity
        var options = DensityOptions(keepFirstDense: config.denseFirst, keepLastDense: config.denseLast)
        let method = DensityMethod(rawValue: config.densityMethod)!
        var ratios: [Double]? = nil
        switch method {
        case .erSynflow:
            ratios = try synflowLayerDensities(network, layers: layers, density: density,
                                               shortcuts: SynflowShortcuts(rawValue: config.synflowShortcuts)!)
        case .erSNIP:
            ratios = try snipLayerDensities(network, layers: layers, density: density, batches: try snipData())
        case .erIMP:
            options.layerRatios = try Checkpoint.read(from: config.ratiosFrom).maskDensities()
        default:
            break
        }
        if let ratios { options.layerRatios = Dictionary(uniqueKeysWithValues: zip(layers.map(\.name), ratios)) }
        do { return try layerwiseDensities(layers, density: density, method: method, options: options) } catch let e as SparsityError {
            throw ConfigError(e.description)
        }
    }

    /// The first `snip_batches` training batches of this rank, for SNIP's scores.
    func snipData() throws -> [(images: [Float], labels: [Int32])] {
        try trainShards.batches(epoch: 0).prefix(config.snipBatches).map { indices in
            let b = try loader.makeBatch(indices, epoch: 0, seed: UInt64(config.seed))
            return (b.images, b.labels)
        }
    }

    /// `mask_from`: rank 0 writes the pruner's mask at `sparsity` into the store (before any
    /// collective, so a failure is agreed on like any other set-up error).
    func pruneAtInitialization() throws {
        let density = 1 - config.sparsity
        do {
            switch config.maskFrom {
            case "snip": try snipPrune(network, layers: layers, density: density, batches: try snipData())
            case "synflow": try synflowPrune(network, layers: layers, density: density,
                                             shortcuts: SynflowShortcuts(rawValue: config.synflowShortcuts)!)
            default: preconditionFailure("mask_from \(config.maskFrom)")
            }
        } catch let e as SparsityError {
            throw ConfigError("mask_from \(config.maskFrom): \(e.description)")
        }
    }

    /// Rank 0's initial mask (the ER draw or the pruner's, written at set-up) and weights go to
    /// all ranks.
    func drawInitialState() throws {
        let store = network.store
        if comm.rank == 0 { store.applyMask() }
        try comm.broadcast(store.values, root: 0)
        try MaskSync.broadcastMask(store.mask, segments: store.segments, root: 0, communicator: comm)
        store.applyMask()
    }

    /// Rank 0 draws the ER mask at `densities` into the store, with flow repairs (at set-up, so
    /// a problem is agreed on like any other set-up error).
    func drawInitialMask(densities: [Double]) throws {
        let store = network.store
        let nnz = nonZeroCounts(layers, densities: densities, density: 1 - config.sparsity)
        drawMasks(layers, densities: densities, nonZeros: nnz, mode: MaskDraw(rawValue: config.maskDraw)!,
                  seed: UInt64(config.seed), into: store.mask)
        let repairs = preserveFlow(layers, densities: densities, method: FlowPreservation(rawValue: config.flow)!,
                                   seed: UInt64(config.seed), mask: store.mask)
        let added = repairs.reduce(0) { $0 + $1.edgesAdded }
        if config.flow != "none" { logger.info("flow preservation added \(added) weights") }
    }

    /// Rank 0: an initial mask that cuts off a class or empties a layer is an error (unless
    /// `allow_disconnected`); units left without inputs are a warning.
    func checkConnectivity() throws {
        let cut = Disconnection(layers, mask: UnsafeBufferPointer(network.store.mask))
        guard cut.deadUnitCount > 0 || !cut.emptyLayers.isEmpty else { return }
        var what = cut.summary
        if cut.deadClasses > 0 { what = "\(cut.deadClasses) of \(cut.layers.last!.outputs) classes are cut off; " + what }
        if !cut.emptyLayers.isEmpty { what = "layers without any weight: \(cut.emptyLayers.joined(separator: ", ")); " + what }
        if cut.isConnected || config.allowDisconnected {
            logger.warning("the initial mask leaves \(what); flow: random-addition connects every unit")
        } else {
            throw ConfigError("the initial mask disconnects the network: \(what); use flow: random-addition (it connects every unit), a lower sparsity, or allow_disconnected: true")
        }
    }

    // MARK: - Running

    /// Trains the remaining epochs (or up to `stopAfter` completed epochs, as if interrupted);
    /// returns the metrics of each.
    @discardableResult
    public func run(stopAfter: Int? = nil, progress: ((String) -> Void)? = nil) throws -> [EpochMetrics] {
        if comm.rank == 0 {
            let maskable = network.store.maskableCount
            if let str = network.store.transform as? SoftThreshold, let s = str.thresholds.first {
                if completedEpochs == 0 {
                    logger.info("str: thresholds start at s = \(network.store.value(s)[0]) (str_s_init\(config.strSInit == nil ? ", from the run's learning-rate sum" : ""))")
                } else {
                    logger.info("str: resumed after epoch \(completedEpochs); first layer's threshold s = \(network.store.value(s)[0])")
                }
            }
            logger.info("\(config.model): \(network.store.count) parameters, \(maskable) maskable, density \(String(format: "%.4f", masks.globalDensity)), \(comm.size) rank(s), \(trainShards.batchesPerEpoch) steps/epoch, algorithm \(config.algorithm), \(config.totalEpochs) epochs")
        }
        let total = config.totalEpochs
        watchdog.start()
        defer { watchdog.stop() }
        while completedEpochs < min(total, stopAfter ?? total) {
            let (finished, stop) = try trainEpoch(completedEpochs, progress: progress)
            guard let m = finished else {
                try checkStateIsFinite(epoch: completedEpochs)
                if comm.rank == 0 { try writeCheckpoint() }
                try comm.barrier()
                throw StoppedBySignal(epoch: completedEpochs, step: partialEpoch!.steps,
                                      steps: trainShards.batchesPerEpoch, directory: runDirectory)
            }
            history.append(m)
            completedEpochs += 1
            try checkStateIsFinite(epoch: completedEpochs - 1)
            watchdog.expectDelay(floors: 1, at: "epoch \(completedEpochs)'s checkpoint")
            if comm.rank == 0 {
                try appendMetrics(m)
                if stop || completedEpochs % config.checkpointEvery == 0 || completedEpochs == total || completedEpochs == stopAfter {
                    try writeCheckpoint()
                }
            }
            try comm.barrier()
            if stop && completedEpochs < total {
                throw StoppedBySignal(epoch: completedEpochs, step: 0, steps: trainShards.batchesPerEpoch, directory: runDirectory)
            }
        }
        return history
    }

    /// One epoch of training followed by evaluation — or, when a stop is agreed in its middle,
    /// the epoch so far in `partialEpoch` and no metrics. Also returns whether a stop was agreed.
    /// A resumed partial epoch continues at its next step.
    func trainEpoch(_ epoch: Int, progress: ((String) -> Void)?) throws -> (EpochMetrics?, Bool) {
        let steps = trainShards.batchesPerEpoch
        let perRank = config.batchSize / comm.size
        let resumed = partialEpoch.flatMap { $0.epoch == epoch ? $0 : nil }
        partialEpoch = nil
        let first = resumed?.steps ?? 0
        let packedBefore = step.packedBytes - (resumed?.packedBytes ?? 0), denseBefore = step.denseBytes - (resumed?.denseBytes ?? 0)
        let phase = policy.phase(containing: epoch)
        let rates = schedule(of: phase)
        policy.prepare(epoch: epoch, store: network.store)
        network.store.refreshEffective()
        if epoch == phase.start && phase.length < config.totalEpochs && resumed == nil {
            let density = effectiveDensity
            let event = PhaseEvent(name: phase.name, epoch: epoch + 1, epochs: phase.length, density: density)
            if comm.rank == 0 {
                pendingLines.append(try jsonLine(event))
                progress?(String(format: "%@: epochs %d-%d at density %.4f, LR schedule restarts", phase.name, epoch + 1,
                                 epoch + phase.length, density))
            }
        }
        loader.start(batches: Array(trainShards.batches(epoch: epoch).dropFirst(first)), epoch: epoch, seed: UInt64(config.seed))
        network.training = true
        var lossSum = comm.rank == 0 ? resumed?.lossSum ?? 0 : 0, correct = comm.rank == 0 ? resumed?.correct ?? 0 : 0
        var lr: Float = 0
        var epochEvents: [MaskEvent] = resumed?.events ?? []
        if let resumed, comm.rank == 0 { pendingLines = resumed.pendingLines.map { Data($0.utf8) } }
        let t0 = Date(timeIntervalSinceNow: -(resumed?.seconds ?? 0))
        var stop = false
        for s in first..<steps {
            let stepStart = Date()
            guard let batch = try loader.next() else { throw ConfigError("the data loader ended early at step \(s)") }
            let t = epoch * steps + s + 1
            lr = rates.rate(atEpoch: Double(epoch - phase.start) + Double(s + 1) / Double(steps))
            let (l, c) = try batch.images.withUnsafeBufferPointer { images in
                try batch.labels.withUnsafeBufferPointer { labels in
                    try step.run(images: images.baseAddress!, labels: labels.baseAddress!, batch: perRank,
                                 normalizer: Float(config.batchSize), learningRate: lr,
                                 denseGradient: policy.needsDenseGradient(atStep: t))
                }
            }
            stop = try checkStep(l, epoch: epoch, step: s, learningRate: lr)
            watchdog.beat("epoch \(epoch + 1) step \(s + 1)", stepSeconds: Date().timeIntervalSince(stepStart))
            lossSum += Double(l)
            correct += Double(c)
            policy.didStep(t, masks: masks)
            // A change after the epoch's last step waits for the evaluation, so the epoch's test
            // accuracy is that of the network trained this epoch (IMP rewinds at a cycle's end).
            if policy.changesMask(afterStep: t) && s + 1 < steps {
                epochEvents.append(try applyChange(afterStep: t, epoch: epoch, progress: progress))
            }
            if stop && s + 1 < steps {
                var sums = [lossSum, correct]
                try comm.allreduce(&sums, op: .sum)
                partialEpoch = EpochProgress(
                    epoch: epoch, steps: s + 1, lossSum: sums[0], correct: sums[1], packedBytes: step.packedBytes - packedBefore,
                    denseBytes: step.denseBytes - denseBefore, seconds: Date().timeIntervalSince(t0), events: epochEvents,
                    pendingLines: pendingLines.map { String(decoding: $0, as: UTF8.self) })
                return (nil, true)
            }
            if (s + 1) % config.logEvery == 0 || s + 1 == steps {
                // The running loss and accuracy over the global batches so far (all ranks take part).
                var sums = [lossSum, correct]
                try comm.allreduce(&sums, op: .sum)
                if comm.rank == 0, let progress {
                    let elapsed = Date().timeIntervalSince(t0)
                    let rate = Double((s + 1) * config.batchSize) / elapsed
                    let eta = elapsed / Double(s + 1) * Double(steps - s - 1)
                    progress(String(format: "epoch %d/%d step %d/%d loss %.4f acc %.3f lr %.4f density %.4f %.0f img/s eta %@",
                                    epoch + 1, config.totalEpochs, s + 1, steps, sums[0] / Double(s + 1),
                                    sums[1] / Double((s + 1) * config.batchSize), lr, effectiveDensity, rate,
                                    formatDuration(eta)))
                }
            }
        }
        var totals = [lossSum, correct]
        try comm.allreduce(&totals, op: .sum)
        let seconds = Date().timeIntervalSince(t0)
        let store = network.store
        try MaskSync.verifyAgreement(masks.mask, segments: store.segments, what: "mask", maskedOnly: true, communicator: comm)
        try MaskSync.verifyAgreement(UnsafeBufferPointer(store.values), segments: store.segments, what: "weights",
                                     maskedOnly: false, communicator: comm)
        store.releaseMaskPages()   // read for the check; sparse weights' masks go back to their positions
        try averageLocalBatchNormStatistics()
        let eval = try evaluate()
        let used = effectiveCounts
        let densities = (global: masks.globalDensity, layers: masks.layerDensities)
        let last = (epoch + 1) * steps
        if policy.changesMask(afterStep: last) {
            epochEvents.append(try applyChange(afterStep: last, epoch: epoch, progress: progress))
        }
        events += epochEvents
        let dense = step.denseBytes - denseBefore
        return (EpochMetrics(
            epoch: epoch + 1, steps: last, lr: Double(lr), train_loss: totals[0] / Double(steps),
            train_acc: totals[1] / Double(steps * config.batchSize), test_loss: eval.loss, test_acc: eval.top1,
            test_top5: eval.top5, images_per_second: Double(steps * config.batchSize) / seconds, seconds: seconds,
            bytes_allreduced: step.packedBytes - packedBefore + dense, bytes_dense_gradient: dense,
            bytes_broadcast: epochEvents.reduce(0) { $0 + $1.bytes_broadcast }, mask_changes: epochEvents.count,
            phase: phase.name, global_density: densities.global,
            layer_density: Dictionary(uniqueKeysWithValues: zip(masks.layers.map(\.name), densities.layers)),
            effective_density: Double(used.reduce(0, +)) / Double(max(1, masks.maskableTotal)),
            effective_layer_density: Dictionary(uniqueKeysWithValues: zip(masks.layers, used).map { ($0.name, Double($1) / Double($0.count)) }),
            layers: masks.layers.map(\.name)), stop)
    }

    /// Applies the policy's change after step `t` on every rank; rank 0 logs and prints it.
    private func applyChange(afterStep t: Int, epoch: Int, progress: ((String) -> Void)?) throws -> MaskEvent {
        watchdog.expectDelay(floors: 1, at: "the mask change after step \(t)")
        let event = try changes.apply(afterStep: t, epoch: epoch, policy: policy)
        if comm.rank == 0 {
            pendingLines.append(try jsonLine(event))
            progress?(event.line)
        }
        return event
    }

    /// Weights each maskable layer computes with: its active count, or under a weight transform
    /// its non-zero effective weights (as of the last forward pass).
    var effectiveCounts: [Int] { network.store.transform?.effectiveCounts(network.store) ?? masks.activeCounts }
    /// `Σ effectiveCounts / N`.
    var effectiveDensity: Double { Double(effectiveCounts.reduce(0, +)) / Double(max(1, masks.maskableTotal)) }

    /// Test loss, top-1 and top-5 accuracy over the whole test set (each sample once, split
    /// over the ranks), in evaluation mode.
    public func evaluate(batchSize: Int = 256) throws -> (loss: Double, top1: Double, top5: Double) {
        let shards = Sharding(count: data.test.count, batchSize: batchSize, rank: comm.rank, worldSize: comm.size,
                              seed: 0, shuffle: false)
        let evalLoader = DataLoader(dataset: data.test, transform: data.testTransform, depth: 2, threads: config.dataThreads)
        evalLoader.start(batches: shards.evaluationBatches(), epoch: 0, seed: 0)
        network.training = false
        defer { network.training = true }
        var sums = [0.0, 0.0, 0.0, 0.0]   // loss, top-1, top-5, count
        while let b = try evalLoader.next() {
            watchdog.beat("evaluation")
            let logits = b.images.withUnsafeBufferPointer { network.forward(images: $0.baseAddress!, batch: b.count) }
            b.labels.withUnsafeBufferPointer { labels in
                let (l, c) = loss(logits, labels: labels.baseAddress!, normalizer: 1, ctx: network.ctx)
                sums[0] += Double(l)
                sums[1] += Double(c)
                sums[2] += Double(topKCorrect(logits, labels: labels.baseAddress!, k: min(5, network.classes)))
                sums[3] += Double(b.count)
            }
        }
        try comm.allreduce(&sums, op: .sum)
        return (sums[0] / sums[3], sums[1] / sums[3], sums[2] / sums[3])
    }

    // MARK: - Files

    /// Appends the epoch's events and then its metrics to `metrics.jsonl`.
    func appendMetrics(_ m: EpochMetrics) throws {
        let lines = pendingLines + [try jsonLine(m)]
        pendingLines = []
        let path = runDirectory + "/metrics.jsonl"
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        for line in lines { try handle.write(contentsOf: line) }
        try handle.close()
    }
}

extension Trainer {
    /// Tensors of a policy's or a weight transform's state (not the model's).
    static func isPolicyTensor(_ name: String) -> Bool { name.hasPrefix("imp/") || name.hasPrefix("frozen/") }
}

/// One JSON object and a newline, keys sorted.
func jsonLine<T: Encodable>(_ value: T) throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var line = try encoder.encode(value)
    line.append(0x0A)
    return line
}

/// "1h02m", "3m05s", "42s".
func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}
