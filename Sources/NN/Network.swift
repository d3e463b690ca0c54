import Foundation
import Tensor

/// A model ready to train: its layers, its parameter store, a context, and the input it takes.
///
/// Images come in as NCHW floats and are transposed once to the channel-major layout the layers
/// use; logits come out as (classes, N).
public final class Network {
    public let name: String
    public let store: ParameterStore
    public let body: Sequential
    public let ctx = Context()
    /// Per-image input: channels, height, width.
    public let inputChannels: Int, inputHeight: Int, inputWidth: Int
    public let classes: Int
    private let input = Tensor()

    /// Checks that the layers take `input` and produce `classes` logits, then allocates and
    /// initialises the parameters from `seed`.
    public init(
        name: String, store: ParameterStore, body: Sequential,
        input: (channels: Int, height: Int, width: Int), classes: Int, seed: UInt64,
        transform: WeightTransform? = nil
    ) throws {
        self.name = name
        self.store = store
        self.body = body
        inputChannels = input.channels
        inputHeight = input.height
        inputWidth = input.width
        self.classes = classes
        let out: Shape
        do {
            out = try body.outputShape(for: Shape(n: 1, c: input.channels, h: input.height, w: input.width))
        } catch let error as ModelError {
            throw ModelError("\(name) cannot take \(input.channels)×\(input.height)×\(input.width) input: \(error)")
        }
        guard out == Shape(n: 1, c: classes) else {
            throw ModelError("\(name) produces \(out) per image, expected \(classes) logits")
        }
        // Weights, gradients, momentum and mask: refuse what this machine cannot hold.
        let bytes = Double(store.count) * 4 * 4
        guard bytes < Double(ProcessInfo.processInfo.physicalMemory) else {
            throw ModelError(String(format: "\(name) has %.3g parameters (%.1f GB for weights, gradients, momentum and mask); this machine has %.1f GB", Double(store.count), bytes / 1e9, Double(ProcessInfo.processInfo.physicalMemory) / 1e9))
        }
        store.allocate(seed: seed)
        if let transform { store.install(transform, seed: seed) }
        // The first layer's input gradient is never used (nor a leading flatten's).
        var first = body.layers.first
        if let flatten = first as? Flatten, body.layers.count > 1 {
            flatten.needsInputGradient = false
            first = body.layers[1]
        }
        if let conv = first as? Conv2d { conv.needsInputGradient = false }
        if let linear = first as? Linear { linear.needsInputGradient = false }
    }

    /// Runs layers on `threads` workers. Convolutions split the batch into chunks, one per
    /// worker, so OpenBLAS itself is set to one thread (its threads would compete with ours).
    public func setThreads(_ threads: Int) {
        ctx.threads = max(1, threads)
        BLAS.threads = ctx.threads > 1 ? 1 : BLAS.threads
    }

    /// Elements of one input image.
    public var imageSize: Int { inputChannels * inputHeight * inputWidth }

    /// Runs the layers on `batch` NCHW images; returns logits (classes, batch).
    public func forward(images: UnsafePointer<Float>, batch: Int) -> Tensor {
        ctx.timed(.input) {
            let plane = inputHeight * inputWidth
            input.reshape(Shape(n: batch, c: inputChannels, h: inputHeight, w: inputWidth))
            for n in 0..<batch {
                for c in 0..<inputChannels {
                    (input.data + (c * batch + n) * plane).update(
                        from: images + (n * inputChannels + c) * plane, count: plane)
                }
            }
        }
        store.refreshEffective()
        return body.forward(input, ctx)
    }

    /// Backward from dL/dlogits; adds into `store.gradients`.
    public func backward(_ logitsGradient: Tensor) {
        ctx.release(body.backward(logitsGradient, ctx))
    }

    /// Forward FLOPs for `batch` images (GEMM work only).
    public func forwardFlops(batch: Int) -> Double {
        body.forwardFlops(for: Shape(n: batch, c: inputChannels, h: inputHeight, w: inputWidth))
    }

    public var batchNorms: [BatchNorm] { body.batchNorms }

    /// Forward FLOPs of the weight tensors that remain at the current mask over those of the
    /// dense model: `Σ_l d_l · F_l / Σ_l F_l` (its inverse is the ideal speed-up of the GEMM work).
    public var maskedFlopFraction: Double {
        let parts = body.weightFlops(for: Shape(n: 1, c: inputChannels, h: inputHeight, w: inputWidth))
        let total = parts.reduce(0) { $0 + $1.flops }
        let kept = parts.reduce(0.0) { acc, p in
            acc + p.flops * Double(sum(store.maskValues(p.ref), p.ref.count)) / Double(p.ref.count)
        }
        return total > 0 ? kept / total : 1
    }

    /// Sets training or evaluation mode.
    public var training: Bool {
        get { ctx.training }
        set { ctx.training = newValue }
    }
}
