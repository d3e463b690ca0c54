// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "sparsetrain",
    products: [
        .executable(name: "sparsetrain", targets: ["SparseTrainCLI"]),
        .executable(name: "sparsetrain-fuzz", targets: ["SparseTrainFuzz"]),
        .library(name: "Comm", targets: ["Comm"]),
        .library(name: "Tensor", targets: ["Tensor"]),
        .library(name: "NN", targets: ["NN"]),
        .library(name: "Sparsity", targets: ["Sparsity"]),
        .library(name: "Theory", targets: ["Theory"]),
        .library(name: "Datasets", targets: ["Datasets"]),
        .library(name: "Training", targets: ["Training"]),
        .library(name: "Reporting", targets: ["Reporting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg62-turbo-dev"])]),
        // JPEG decoding with libjpeg's longjmp errors caught in C.
        .target(name: "CJPEGShim", dependencies: ["CJPEG"]),
        // OpenMPI handles (macros) as C functions Swift can call.
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        // Stop requests by signal, as a flag the training loop polls.
        .target(name: "CSignals"),
        // Direct 3×3 convolution kernels (AVX2 + FMA, chosen at run time).
        .target(name: "CConvKernels"),
        // Sparse kernels of masked layers (portable, AVX2 + FMA, AVX-512F; chosen at run time).
        .target(name: "CSparseKernels"),

        // Communication: Communicator, MPI and local implementations, packed masked reducer.
        .target(name: "Comm", dependencies: ["CMPI", "CMPIShim", "Tensor"]),
        // Numeric kernels: GEMM seam over OpenBLAS, random numbers, parallel loops.
        .target(
            name: "Tensor", dependencies: ["COpenBLAS", "CConvKernels", "CSparseKernels"],
            linkerSettings: [.linkedLibrary("m")]),

        // Layers as forward/backward pairs, flat parameter store, models, loss, SGD, schedules.
        .target(name: "NN", dependencies: ["Tensor", "Comm"]),

        // Masks: layerwise densities, ER drawing, flow preservation.
        .target(name: "Sparsity", dependencies: ["NN", "Tensor"]),

        // The paper's theory: width bounds, the constructive proof, subset-sum experiments.
        .target(name: "Theory", dependencies: ["NN", "Tensor"]),

        // Data: CIFAR binary, ImageFolder JPEG, synthetic; transforms; sharded prefetching loader.
        .target(name: "Datasets", dependencies: ["CJPEGShim", "Tensor"]),

        // The training run: config, distributed loop, checkpoints, metrics.
        .target(
            name: "Training",
            dependencies: [
                "Comm", "Tensor", "NN", "Sparsity", "Datasets",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]),

        // Reports of finished runs: tables with intervals over seeds, the paper's numbers, SVG, HTML.
        .target(name: "Reporting", dependencies: ["Training"]),

        .executableTarget(
            name: "SparseTrainCLI",
            dependencies: [
                "Comm", "Tensor", "NN", "Sparsity", "Theory", "Datasets", "Training", "CSignals", "Reporting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // libFuzzer targets for the parsers of user files (launch/fuzz.sh); replays inputs otherwise.
        .executableTarget(name: "SparseTrainFuzz", dependencies: ["Datasets", "Training"]),

        .testTarget(name: "CommTests", dependencies: ["Comm", "Tensor"]),
        .testTarget(name: "TensorTests", dependencies: ["Tensor"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "Tensor"]),
        .testTarget(name: "SparsityTests", dependencies: ["Sparsity", "NN", "Tensor"]),
        .testTarget(name: "TheoryTests", dependencies: ["Theory", "NN", "Tensor"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "Tensor"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Comm", "NN", "Tensor"]),
        .testTarget(name: "ReportingTests", dependencies: ["Reporting", "Training"]),
        // Runs for real only under `mpirun -np 2` (see launch/test.sh); skips otherwise.
        .testTarget(name: "MPIIntegrationTests", dependencies: ["Comm", "Tensor", "Training", "NN"]),
    ]
)
