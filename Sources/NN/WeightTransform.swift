/// A reparameterisation of the maskable weights (STR's soft threshold, edge-popup's scores).
///
/// Layers compute with effective weights `w_eff = f(θ)`, which the transform writes into
/// `ParameterStore.effective` before every forward pass. Backward accumulates `dL/dw_eff` into the
/// store's gradient slots of the maskable tensors; once those are reduced across ranks the
/// transform turns them into `dL/dθ` for every trained parameter (the chain rule is linear in the
/// gradient, so applying it after the sum over ranks equals applying it per rank).
public protocol WeightTransform: AnyObject {
    /// Called once, after the store has been allocated and initialised from `seed`.
    func didAllocate(_ store: ParameterStore, seed: UInt64)
    /// Writes `w_eff` of every maskable tensor into `store.effective` (other entries unused).
    func writeEffective(_ store: ParameterStore)
    /// Rewrites `store.gradients`: `dL/dw_eff` at the maskable tensors becomes `dL/dθ` for every
    /// parameter the transform involves; parameters it freezes get gradient 0.
    func backpropagate(_ store: ParameterStore)
    /// Parameters whose gradient only `backpropagate` writes (backward never touches them); the
    /// gradient reducer may treat them as ready from the start of a step.
    var derivedParameters: [ParameterRef] { get }
    /// Non-zero effective weights of each maskable tensor, in store order (from the last
    /// `writeEffective`).
    func effectiveCounts(_ store: ParameterStore) -> [Int]
    /// State kept outside the store (e.g. frozen weights), as checkpoint tensors.
    func stateTensors(_ store: ParameterStore) -> [(name: String, shape: [Int], values: [Float])]
    /// Takes that state back from a checkpoint's tensors (by name).
    func restoreState(_ store: ParameterStore, _ tensor: (String) -> [Float]?) throws
}

extension WeightTransform {
    public var derivedParameters: [ParameterRef] { [] }
    public func stateTensors(_ store: ParameterStore) -> [(name: String, shape: [Int], values: [Float])] { [] }
    public func restoreState(_ store: ParameterStore, _ tensor: (String) -> [Float]?) throws {}
}
