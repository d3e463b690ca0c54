import Comm
import Foundation
import Tensor

/// Where a layer's backward put a parameter's gradient.
public enum GradientPlacement: Sendable, Equatable {
    /// Every entry of the tensor in `gradients`.
    case dense
    /// Only the mask's active entries in `gradients` (a sparse weight-gradient kernel); the
    /// others are stale and never read.
    case atMaskOnly
    /// In `packedGradientSlot` (born packed); nothing in `gradients`.
    case packed
}

/// One parameter tensor's place in the flat buffers.
public struct ParameterRef: Sendable, Equatable {
    public let index: Int
    public let offset: Int
    public let count: Int
}

/// How a parameter is initialised.
public enum ParameterInit: Sendable {
    case zeros, ones
    case constant(Float)
    /// Normal(0, std).
    case normal(std: Float)
    /// Uniform(−bound, bound).
    case uniform(bound: Float)
}

/// Metadata of one named parameter tensor.
public struct ParameterInfo: Sendable {
    public let name: String
    public let shape: [Int]
    /// Conv and linear weights: may be pruned.
    public let maskable: Bool
    public let initializer: ParameterInit
    public let ref: ParameterRef
}

/// All parameters of a model in one flat buffer, with gradients, momentum and mask of the same
/// layout, so masking, packing, allreduce, checkpoints and the optimizer are single passes.
///
/// Layers register their tensors while the model is built; `allocate()` then creates the
/// buffers. Masks are 0/1 floats (1 = active); masked weights are kept exactly zero.
/// Once the mask's owner packs a maskable weight (`pack(_:positions:)`, PackedParameters.swift),
/// its momentum — and, when sparse, its values and mask — live at its active positions and its
/// dense ranges take no memory; `values`, `value(_:)`, `forwardWeight(_:)`, `mask` and
/// `maskValues(_:)` still show the dense layout, written out on demand.
public final class ParameterStore {
    public private(set) var parameters: [ParameterInfo] = []
    public private(set) var count = 0
    /// The parameter values in the store's layout. A weight whose values are packed
    /// (`pack(_:positions:)`) is written here first: readers and writers of this buffer see every
    /// weight, and a packed weight's next update takes its values back from here.
    public var values: UnsafeMutableBufferPointer<Float> {
        makeDenseCurrentForAll()
        return valueStorage
    }
    /// The dense values (an anonymous mapping: the range of a weight whose values are packed
    /// takes no memory while nothing reads it dense).
    private(set) var valueStorage: UnsafeMutableBufferPointer<Float> = .init(start: nil, count: 0)
    public private(set) var gradients: UnsafeMutableBufferPointer<Float> = .init(start: nil, count: 0)
    /// Momentum in the store's layout. The range of a weight whose momentum is packed
    /// (`pack(_:positions:)`) is unused: +0, its pages given back. Read and write momentum through
    /// `momentum(_:)`, `setMomentum(_:from:)` and `packedMomentum(_:)`.
    private(set) var momentum: UnsafeMutableBufferPointer<Float> = .init(start: nil, count: 0)
    /// By parameter index: the momentum, and the values when sparse enough, of a maskable weight
    /// kept packed at its mask's active positions.
    var packed: [Int: PackedParameter] = [:]
    /// No packed weight has values more current than the dense buffer's (`values` has nothing to do).
    var denseCurrentForAll = true
    /// Some weight's mask range is released (`mask` has something to write out).
    var anyMaskReleased = false
    /// The 0/1 mask in the store's layout. The range of a sparse weight whose state is packed is
    /// written out from its positions when read (`releaseMaskPages()` gives it back again).
    public var mask: UnsafeMutableBufferPointer<Float> {
        writeOutMasks()
        return maskStorage
    }
    /// The mask (an anonymous mapping: released ranges take no memory).
    private(set) var maskStorage: UnsafeMutableBufferPointer<Float> = .init(start: nil, count: 0)
    /// Effective weights when a `WeightTransform` is installed (same layout; only the maskable
    /// tensors are used), else empty.
    public private(set) var effective: UnsafeMutableBufferPointer<Float> = .init(start: nil, count: 0)
    /// The reparameterisation of the maskable weights, if any.
    public private(set) var transform: WeightTransform?
    /// Set before building a model: batch-norm layers built on this store register their affine
    /// parameters γ, β only when true (edge-popup trains none of them).
    public var batchNormAffine = true
    private var allocated = false

    /// Per parameter: where its layer's last backward put the gradient.
    public var gradientPlacement: [GradientPlacement] = []
    /// Set by the training step on steps whose gradient is reduced packed: the slot where a
    /// sparse layer may write a weight's gradient packed (its active entries in ascending
    /// position order), or nil when that weight has none.
    public var packedGradientSlot: ((ParameterRef) -> UnsafeMutableBufferPointer<Float>?)?

    /// Goes up whenever the mask may have changed (`maskDidChange()`); layers with sparse
    /// kernels rebuild their indices when it moves.
    public private(set) var maskGeneration = 0

    /// Set by the mask's owner (`MaskState`): the active positions of a maskable weight
    /// (ascending, relative to its offset) for the current `maskGeneration`, or nil when it does
    /// not know them — then readers scan the mask. Lets sparse layers rebuild their indices in
    /// time proportional to the active weights.
    public var activePositions: ((ParameterRef) -> [Int32]?)?

    /// Per parameter index: the mask generation and active fraction last computed.
    private var activeFractionCache: [Int: (generation: Int, fraction: Double)] = [:]

    /// Active fraction of a weight's mask for the current `maskGeneration` (computed once per
    /// generation: from the owner's active positions when known, else a sum over the mask).
    public func activeFraction(_ ref: ParameterRef) -> Double {
        if let c = activeFractionCache[ref.index], c.generation == maskGeneration { return c.fraction }
        let active = activePositions?(ref)?.count ?? Int(sum(maskValues(ref), ref.count))
        let fraction = Double(active) / Double(max(1, ref.count))
        activeFractionCache[ref.index] = (maskGeneration, fraction)
        return fraction
    }

    /// Called after a layer's backward has written its parameter gradients (reverse layer order);
    /// the trainer points it at the gradient reducer to start allreduces early.
    public var onGradientReady: ((ParameterRef) -> Void)?

    public init() {}

    deinit {
        if allocated {
            for b in [valueStorage, gradients, momentum, maskStorage] { PageMappedFloats.deallocate(b) }
        }
        for p in packed.values { p.deallocate() }
        if transform != nil { effective.deallocate() }
    }

    /// Registers a parameter tensor and returns its place in the flat buffers.
    public func register(
        _ name: String, shape: [Int], maskable: Bool, initializer: ParameterInit
    ) -> ParameterRef {
        precondition(!allocated, "parameters registered after allocation")
        precondition(!parameters.contains { $0.name == name }, "duplicate parameter \(name)")
        let n = shape.reduce(1, *)
        let ref = ParameterRef(index: parameters.count, offset: count, count: n)
        parameters.append(ParameterInfo(
            name: name, shape: shape, maskable: maskable, initializer: initializer, ref: ref))
        count += n
        return ref
    }

    /// Creates the buffers: values initialised from `seed`, gradients and momentum zero, mask 1.
    /// Values, gradients and momentum are anonymous mappings: pages nothing writes (the dense
    /// gradient of a weight whose layer writes it born packed, the dense values and momentum of a
    /// packed weight) take no memory.
    public func allocate(seed: UInt64) {
        precondition(!allocated, "allocate called twice")
        allocated = true
        maskStorage = PageMappedFloats.allocate(count, for: "the mask")
        valueStorage = PageMappedFloats.allocate(count, for: "the weights")
        gradients = PageMappedFloats.allocate(count, for: "the gradients")
        momentum = PageMappedFloats.allocate(count, for: "the momentum")
        maskStorage.update(repeating: 1)
        gradientPlacement = [GradientPlacement](repeating: .dense, count: parameters.count)
        initialize(seed: seed)
    }

    /// Draws every parameter from its initializer; parameter i uses its own stream, so adding a
    /// layer does not change the others.
    public func initialize(seed: UInt64) {
        for p in parameters {
            var rng = Xoshiro256(seed: seed ^ (UInt64(p.ref.index) &* 0x9E37_79B9_7F4A_7C15))
            let v = values.baseAddress! + p.ref.offset
            switch p.initializer {
            case .zeros: v.update(repeating: 0, count: p.ref.count)
            case .ones: v.update(repeating: 1, count: p.ref.count)
            case .constant(let c): v.update(repeating: c, count: p.ref.count)
            case .uniform(let bound):
                for i in 0..<p.ref.count { v[i] = (rng.nextFloat() * 2 - 1) * bound }
            case .normal(let std):
                fillNormal(v, p.ref.count, std: std, rng: &rng)
            }
        }
        applyMask()
    }

    /// Installs the reparameterisation (once, after `allocate`) and lets it initialise its state.
    public func install(_ transform: WeightTransform, seed: UInt64) {
        precondition(allocated && self.transform == nil, "install a transform once, after allocation")
        precondition(packed.isEmpty, "a weight transform trains every entry: install it before momentum is packed")
        self.transform = transform
        effective = .allocate(capacity: max(count, 1))
        effective.initialize(repeating: 0)
        effective = UnsafeMutableBufferPointer(rebasing: effective[0..<count])
        transform.didAllocate(self, seed: seed)
        transform.writeEffective(self)
    }

    /// Brings the effective weights up to date with the parameters (no-op without a transform).
    public func refreshEffective() { transform?.writeEffective(self) }

    /// A parameter's values in the dense layout, to read or write (a packed weight's values are
    /// written here first, and its next update takes them back from here).
    public func value(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> {
        makeDenseCurrent(ref)
        return valueStorage.baseAddress! + ref.offset
    }
    /// The weights the dense passes compute with, read only: the effective weights of a
    /// maskable tensor when a transform is installed, else the parameter values (a packed weight's
    /// written out to its dense range when they changed since).
    public func forwardWeight(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> {
        if transform != nil && parameters[ref.index].maskable { return effective.baseAddress! + ref.offset }
        denseForReading(ref)
        return valueStorage.baseAddress! + ref.offset
    }
    public func gradient(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> { gradients.baseAddress! + ref.offset }
    /// A weight's mask in the dense layout, to read or write.
    public func maskValues(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> {
        writeOutMask(ref)
        return maskStorage.baseAddress! + ref.offset
    }

    public func zeroGradients() { gradients.update(repeating: 0) }

    /// Zeroes a parameter's gradient by giving its whole pages back to the system (they read as
    /// zero and take memory again only when written) and writing zeros to the partial pages at
    /// its ends. The same values as writing zeros; for a gradient that may stay unwritten.
    public func zeroGradientReleasingPages(_ ref: ParameterRef) { PageMappedFloats.zeroReleasingPages(gradient(ref), ref.count) }

    /// Records that the mask buffer was written (sparse kernels rebuild their indices).
    public func maskDidChange() { maskGeneration &+= 1 }

    /// `w ← w ⊙ m` and `v ← v ⊙ m` over maskable parameters (after the mask was written: also
    /// `maskDidChange()`). A packed momentum is left as it is: its positions change only by
    /// `pack`, which the mask's owner calls for every mask it makes.
    public func applyMask() {
        maskDidChange()
        let values = self.values, mask = self.mask
        for p in parameters where p.maskable {
            let o = p.ref.offset
            for i in o..<(o + p.ref.count) where mask[i] == 0 {
                values[i] = 0
                // Written only when not +0 already: untouched pages of the mapping stay free.
                if momentum[i].bitPattern != 0 { momentum[i] = 0 }
            }
        }
    }

    /// The layout as segments for the gradient reducer and mask synchronisation.
    public var segments: [BufferSegment] {
        parameters.map { BufferSegment(name: $0.name, offset: $0.ref.offset, count: $0.ref.count, masked: $0.maskable) }
    }

    /// Parameters of maskable tensors.
    public var maskableCount: Int { parameters.filter(\.maskable).reduce(0) { $0 + $1.ref.count } }

    /// Active entries of maskable tensors.
    public var activeMaskableCount: Int {
        parameters.filter(\.maskable).reduce(0) { acc, p in
            acc + Int(sum(mask.baseAddress! + p.ref.offset, p.ref.count))
        }
    }

    public func info(named name: String) -> ParameterInfo? { parameters.first { $0.name == name } }
}

/// Fills `p[0..<n]` with Normal(0, std) draws (Box–Muller, two values per pair of uniforms).
public func fillNormal(_ p: UnsafeMutablePointer<Float>, _ n: Int, std: Float, rng: inout Xoshiro256) {
    var i = 0
    while i < n {
        let u1 = max(rng.nextDouble(), 1e-300), u2 = rng.nextDouble()
        let r = (-2 * log(u1)).squareRoot()
        p[i] = Float(r * cos(2 * Double.pi * u2)) * std
        if i + 1 < n { p[i + 1] = Float(r * sin(2 * Double.pi * u2)) * std }
        i += 2
    }
}
