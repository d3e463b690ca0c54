import ArgumentParser
import NN
import Sparsity

extension SparseTrain {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure the speed of the parts of a training step.",
            subcommands: [BenchAllreduce.self, BenchStep.self, BenchConv.self, BenchKernels.self, BenchData.self, BenchMaskChange.self, BenchScaling.self])
    }
}

/// Draws a random ER mask (exact counts, seed 1) of global `density` with `method`'s layer ratios
/// into `net` and zeroes the weights it leaves out; density 1 leaves the network dense.
func drawBenchMask(_ net: Network, density: Double, method: String) throws {
    guard density < 1 else { return }
    let layers = MaskableLayer.all(in: net.store)
    let densities = try layerwiseDensities(layers, density: density, method: DensityMethod(rawValue: method)!)
    drawMasks(layers, densities: densities, nonZeros: nonZeroCounts(layers, densities: densities, density: density),
              mode: .count, seed: 1, into: net.store.mask)
    net.store.applyMask()
}
