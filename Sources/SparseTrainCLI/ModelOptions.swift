import ArgumentParser
import Comm
import NN
import Tensor

extension ModelName: ExpressibleByArgument {}
extension ConvolutionAlgorithm: ExpressibleByArgument {}
extension SparseKernelMode: ExpressibleByArgument {}
extension CommunicationThreadMode: ExpressibleByArgument {}
extension SparseConvolution.Layout: ExpressibleByArgument {}

/// The model a command works on: name, classes, input shape, MLP widths.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model: \(ModelName.allCases.map(\.rawValue).joined(separator: ", ")).")
    var model: ModelName = .resnet20

    @Option(help: "Output classes (default 10; 1000 for resnet50-imagenet).")
    var classes: Int?

    @Option(help: "Input shape CxHxW (default 3x32x32; 3x224x224 for resnet50-imagenet).")
    var input: String?

    @Option(parsing: .upToNextOption, help: "Hidden layer widths of the MLP.")
    var hidden: [Int] = [256, 256]

    var classCount: Int { classes ?? (model == .resnet50ImageNet ? 1000 : 10) }

    /// Parses `--input`, e.g. "3x32x32".
    func inputShape() throws -> (channels: Int, height: Int, width: Int)? {
        guard let input else { return nil }
        let parts = input.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 3, parts.allSatisfy({ $0 > 0 }) else {
            throw InputError("--input must look like 3x32x32 (channels x height x width), got '\(input)'")
        }
        return (parts[0], parts[1], parts[2])
    }

    /// Builds the model, or throws a one-line error naming the problem.
    func build(seed: UInt64 = 1) throws -> Network {
        guard classCount >= 2 else { throw InputError("--classes must be at least 2") }
        guard hidden.allSatisfy({ $0 > 0 }) else { throw InputError("--hidden widths must be positive") }
        do {
            return try buildModel(model, classes: classCount, input: try inputShape(), hidden: hidden, seed: seed)
        } catch let error as ModelError {
            throw InputError(error.description)
        }
    }
}
