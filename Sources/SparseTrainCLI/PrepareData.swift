import ArgumentParser
import Datasets
import Foundation

extension SparseTrain {
    /// `sparsetrain prepare-data`: ImageFolder → packed fixed-size shards.
    struct PrepareData: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "prepare-data",
            abstract: "Pack an ImageFolder of JPEGs into fixed-size binary shards (decode once, train many times).")

        @Option(help: "ImageFolder directory (one sub-directory per class).")
        var from: String

        @Option(help: "Output directory (must not exist unless --overwrite).")
        var to: String

        @Option(help: "Side of the stored images: shorter side resized to it, then centre-cropped.")
        var size: Int

        @Option(help: "Images per shard file.")
        var imagesPerShard: Int = 10_000

        @Option(help: "Decoding threads.")
        var threads: Int = ProcessInfo.processInfo.activeProcessorCount

        @Flag(help: "Replace an existing output directory.")
        var overwrite = false

        @Flag(help: "Skip images that fail to decode (and count them) instead of stopping.")
        var skipBad = false

        func validate() throws {
            guard size > 0, imagesPerShard > 0, threads > 0 else {
                throw InputError("--size, --images-per-shard and --threads must be positive")
            }
        }

        func run() throws {
            do {
                let source = try ImageFolder(root: from, minimumSide: size)
                print("packing \(source.count) images of \(source.classNames.count) classes from \(from) at \(size)×\(size)")
                let t0 = now()
                let (written, skipped) = try prepareDataset(
                    source, size: size, output: to, overwrite: overwrite, imagesPerShard: imagesPerShard,
                    threads: threads, skipBad: skipBad) { done, total in
                        print("  \(done)/\(total) images")
                        fflushStdout()
                    }
                print("wrote \(written) images to \(to) in \(fixed(now() - t0, 1)) s (verified)"
                    + (skipped > 0 ? "; skipped \(skipped) undecodable" : ""))
            } catch let e as DatasetError {
                throw InputError(e.description)
            }
        }
    }
}
