import ArgumentParser
import Foundation
import Reporting
import NN
import Sparsity
import Datasets
import Training

extension DensityMethod: ExpressibleByArgument {}
extension MaskDraw: ExpressibleByArgument {}
extension FlowPreservation: ExpressibleByArgument {}
extension SynflowShortcuts: ExpressibleByArgument {}

extension SparseTrain {
    /// `sparsetrain densities`: per-layer densities of a random ER mask, optionally drawn.
    struct Densities: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-layer densities of a layerwise sparsity method (and, with --draw, the mask).")

        @OptionGroup var modelOptions: ModelOptions

        @Option(help: "Global sparsity in [0, 1): the fraction of maskable weights removed.")
        var sparsity: Double

        @Option(help: "Method: \(DensityMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
        var method: DensityMethod = .erk

        @Option(help: "JSON file {\"layer.name\": density, …} for --method file.")
        var densityFile: String?

        @Option(help: "Synflow rounds for --method er-synflow.")
        var synflowRounds: Int = 100

        @Option(help: ArgumentHelp(
            "er-synflow: dense or prune. dense (default) leaves the residual blocks' 1×1 projection shortcuts out of Synflow's ranking and unpruned (ratio 1, before the ratios are rescaled to the target), as the Synflow authors' code does (prune_residual=False), the code the paper's ER-Synflow ratios come from; prune scores them like every other layer, and at sparsity 0.9 Synflow then empties ResNet-18's stage-3 and stage-4 shortcuts (a shortcut path has one weight layer against the main branch's two). ResNet-20/32/56/110 have no shortcut weights."))
        var synflowShortcuts: SynflowShortcuts = .dense

        @Option(help: "ImageFolder of training JPEGs (class sub-directories) SNIP scores on, for --method er-snip (default: synthetic data).")
        var snipData: String?

        @Option(help: "Batches of 128 images SNIP sums its scores over.")
        var snipBatches: Int = 1

        @Option(help: "Checkpoint whose masks give the layer ratios, for --method er-imp.")
        var ratiosFrom: String?

        @Flag(help: "Keep the first maskable layer dense.")
        var denseFirst = false

        @Flag(help: "Keep the last maskable layer (the classifier) dense.")
        var denseLast = false

        @Flag(help: "Also draw the mask and report realised counts and flow repairs.")
        var draw = false

        @Option(help: "Seed of the mask.")
        var seed: UInt64 = 0

        @Option(help: "How the mask is drawn: count (exact) or bernoulli.")
        var maskDraw: MaskDraw = .count

        @Option(help: "Flow preservation after drawing: none, random-addition, rejection.")
        var flow: FlowPreservation = .none

        @Flag(help: "With random-addition: remove one other weight per weight added.")
        var keepCount = false

        @Option(help: "Write an SVG of the per-layer densities of every method side by side.")
        var svg: String?

        @Flag(help: "Print one JSON object instead of a table.")
        var json = false

        func validate() throws {
            guard sparsity.isFinite, sparsity >= 0, sparsity < 1 else {
                throw InputError("--sparsity \(sparsity) is outside [0, 1)")
            }
            if method == .file && densityFile == nil { throw InputError("--method file needs --density-file") }
            if !draw && (flow != .none || keepCount) { throw InputError("--flow and --keep-count need --draw") }
            if keepCount && flow != .randomAddition { throw InputError("--keep-count applies to --flow random-addition") }
            if synflowRounds < 1 || snipBatches < 1 { throw InputError("--synflow-rounds and --snip-batches must be at least 1") }
            if method == .erIMP && ratiosFrom == nil { throw InputError("--method er-imp needs --ratios-from CHECKPOINT") }
        }

        struct LayerRow: Codable {
            var name: String
            var shape: [Int]
            var params: Int
            var density: Double
            var nnz: Int
            var realized_nnz: Int?
            var dead_outputs: Int?
            var dead_inputs: Int?
            var edges_added: Int?
            var edges_removed: Int?
        }

        struct Report: Codable {
            var model: String
            var method: String
            var sparsity: Double
            var layers: [LayerRow]
            var total_params: Int
            var total_nnz: Int
            var total_density: Double
            var realized_nnz: Int?
            var realized_density: Double?
        }

        func options() throws -> DensityOptions {
            var o = DensityOptions(keepFirstDense: denseFirst, keepLastDense: denseLast)
            if let path = densityFile { o.layerRatios = try readDensityFile(path) }
            return o
        }

        func run() throws {
            let net = try modelOptions.build()
            let layers = MaskableLayer.all(in: net.store)
            let density = 1 - sparsity
            var opts = try options()
            switch method {
            case .erSynflow:
                let ratios = try synflowLayerDensities(net, layers: layers, density: density, rounds: synflowRounds,
                                                       shortcuts: synflowShortcuts)
                opts.layerRatios = Dictionary(uniqueKeysWithValues: zip(layers.map(\.name), ratios))
            case .erSNIP:
                let ratios = try snipLayerDensities(net, layers: layers, density: density, batches: try snipBatchesOfData(net))
                opts.layerRatios = Dictionary(uniqueKeysWithValues: zip(layers.map(\.name), ratios))
            case .erIMP:
                do { opts.layerRatios = try Checkpoint.read(from: ratiosFrom!).maskDensities() } catch let e as ConfigError {
                    throw InputError(e.description)
                }
            default:
                break
            }
            let densities = try compute(layers, density: density, method: method, opts)
            let nnz = nonZeroCounts(layers, densities: densities, density: density)
            var rows = zip(layers, zip(densities, nnz)).map { l, dn in
                LayerRow(name: l.name, shape: l.shape, params: l.count, density: Double(dn.1) / Double(l.count), nnz: dn.1)
            }
            let total = layers.reduce(0) { $0 + $1.count }
            var report = Report(model: modelOptions.model.rawValue, method: method.rawValue, sparsity: sparsity,
                                layers: rows, total_params: total, total_nnz: nnz.reduce(0, +),
                                total_density: Double(nnz.reduce(0, +)) / Double(total))
            if draw {
                drawMasks(layers, densities: densities, nonZeros: nnz, mode: maskDraw, seed: seed, into: net.store.mask)
                let before = layers.map { deadUnits($0, mask: net.store.mask.baseAddress!) }
                let repairs = preserveFlow(layers, densities: densities, method: flow, keepCount: keepCount,
                                           seed: seed, mask: net.store.mask)
                let active = activeCounts(layers, mask: UnsafeBufferPointer(net.store.mask))
                for i in rows.indices {
                    rows[i].realized_nnz = active[i]
                    rows[i].dead_outputs = before[i].outputs.count
                    rows[i].dead_inputs = before[i].inputs.count
                    rows[i].edges_added = repairs[i].edgesAdded
                    rows[i].edges_removed = repairs[i].edgesRemoved
                }
                report.layers = rows
                report.realized_nnz = active.reduce(0, +)
                report.realized_density = Double(active.reduce(0, +)) / Double(total)
            }
            if let svg { try writeChart(layers, density: density, opts, to: svg) }
            if json {
                print(try jsonLine(report))
            } else {
                printTable(report)
            }
        }

        /// Batches of 128 training images for SNIP, from --snip-data or synthetic data of the
        /// model's input size.
        private func snipBatchesOfData(_ net: NN.Network) throws -> [(images: [Float], labels: [Int32])] {
            let side = net.inputHeight
            guard net.inputChannels == 3, net.inputWidth == side else {
                throw InputError("--method er-snip needs a model with square RGB input")
            }
            let source: ImageDataset
            do {
                source = try snipData.map { try ImageFolder(root: $0, minimumSide: side) }
                    ?? SyntheticDataset(count: 128 * snipBatches, classes: net.classes, width: side, height: side)
            } catch let e as DatasetError { throw InputError(e.description) }
            let aug: Augmentation = side > 64 ? .imageNetEval : (snipData == nil ? .none : .padCrop(padding: 4, flip: true))
            let loader = DataLoader(dataset: source, transform: ImageTransform(size: side, augmentation: aug, normalization: .cifar10))
            let plan = Sharding(count: source.count, batchSize: min(128, source.count), rank: 0, worldSize: 1, seed: seed).batches(epoch: 0)
            do {
                return try plan.prefix(snipBatches).map { indices in
                    let b = try loader.makeBatch(indices, epoch: 0, seed: seed)
                    return (b.images, b.labels)
                }
            } catch let e as DatasetError { throw InputError(e.description) }
        }

        private func compute(_ layers: [MaskableLayer], density: Double, method: DensityMethod,
                             _ opts: DensityOptions) throws -> [Double] {
            do { return try layerwiseDensities(layers, density: density, method: method, options: opts) } catch let e as SparsityError {
                throw InputError(e.description)
            }
        }

        private func printTable(_ r: Report) {
            print("\(r.model), \(r.method), sparsity \(r.sparsity)" + (draw ? ", mask drawn (\(maskDraw.rawValue), seed \(seed), flow \(flow.rawValue))" : ""))
            var t = draw
                ? TextTable("layer", "shape", "params", "density", "nnz", "drawn", "dead out", "dead in", "added", "removed")
                : TextTable("layer", "shape", "params", "density", "nnz")
            for row in r.layers {
                let shape = row.shape.map(String.init).joined(separator: "x")
                if draw {
                    t.add(row.name, shape, "\(row.params)", fixed(row.density, 5), "\(row.nnz)", "\(row.realized_nnz!)",
                          "\(row.dead_outputs!)", "\(row.dead_inputs!)", "\(row.edges_added!)", "\(row.edges_removed!)")
                } else {
                    t.add(row.name, shape, "\(row.params)", fixed(row.density, 5), "\(row.nnz)")
                }
            }
            if draw {
                t.add("total", "", "\(r.total_params)", fixed(r.total_density, 5), "\(r.total_nnz)", "\(r.realized_nnz!)",
                      "\(r.layers.reduce(0) { $0 + $1.dead_outputs! })", "\(r.layers.reduce(0) { $0 + $1.dead_inputs! })",
                      "\(r.layers.reduce(0) { $0 + $1.edges_added! })", "\(r.layers.reduce(0) { $0 + $1.edges_removed! })")
            } else {
                t.add("total", "", "\(r.total_params)", fixed(r.total_density, 5), "\(r.total_nnz)")
            }
            print(t.render())
        }

        /// Fig. 7 of the paper: the per-layer densities of every method, side by side.
        private func writeChart(_ layers: [MaskableLayer], density: Double, _ opts: DensityOptions, to path: String) throws {
            let methods: [DensityMethod] = [.uniform, .erk, .er, .balanced, .pyramidal] + (method.usesLayerRatios && method != .file ? [method] : [])
            var series: [(String, [Double])] = []
            for m in methods { series.append((m.rawValue, try compute(layers, density: density, method: m, opts))) }
            let title = "\(modelOptions.model.rawValue): layerwise density at sparsity \(sparsity)"
            let svg = barChartSVG(title: title, categories: layers.map(\.name), series: series, yLabel: "density")
            do {
                try Data(svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            } catch {
                throw InputError("cannot write \(path): \(error.localizedDescription)")
            }
        }
    }
}

/// Reads `{"layer.name": density, …}`.
func readDensityFile(_ path: String) throws -> [String: Double] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw InputError("cannot read density file \(path)")
    }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw InputError("density file \(path) is not a JSON object of layer names to densities")
    }
    var out: [String: Double] = [:]
    for (k, v) in object {
        guard let d = (v as? NSNumber)?.doubleValue else {
            throw InputError("density file \(path): value for '\(k)' is not a number")
        }
        out[k] = d
    }
    return out
}
