import ArgumentParser

extension SparseTrain {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure the speed of the parts of a training step.",
            subcommands: [BenchAllreduce.self, BenchStep.self, BenchConv.self, BenchKernels.self, BenchData.self, BenchMaskChange.self, BenchScaling.self])
    }
}
