// swift-tools-version:6.0
import PackageDescription

// No unsafe flags: SwiftPM refuses them in a package that others depend on by version. Dropping
// `-enforce-exclusivity=unchecked` cost nothing measurable (Benchmarks/README.md, "Build flags").
let kernelSettings: [SwiftSetting] = []

let package = Package(
    name: "dino",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "DinoKernels", targets: ["DinoKernels"]),
        .library(name: "DinoModel", targets: ["DinoModel"]),
        .library(name: "DinoData", targets: ["DinoData"]),
        .library(name: "DinoTraining", targets: ["DinoTraining"]),
        .library(name: "DinoEval", targets: ["DinoEval"]),
        .library(name: "DinoPictures", targets: ["DinoPictures"]),
        .executable(name: "dino", targets: ["dino"]),
        .executable(name: "dino-bench", targets: ["dino-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // MARK: Native libraries (Debian: libopenblas-dev, libturbojpeg0-dev, libpng-dev, zlib1g-dev)
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg",
                       providers: [.apt(["libturbojpeg0-dev"]), .brew(["jpeg-turbo"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"]), .brew(["libpng"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Fused attention and GELU: AVX2+FMA chosen at run time, portable C otherwise.
        .target(name: "CDinoKernels"),

        // MARK: Library modules, bottom to top
        .target(name: "DinoKernels", dependencies: ["COpenBLAS", "CDinoKernels"], swiftSettings: kernelSettings),
        .target(name: "DinoModel", dependencies: ["DinoKernels"], swiftSettings: kernelSettings),
        .target(name: "DinoData", dependencies: ["DinoKernels", "CTurboJPEG", "CPNG", "CZlib"],
                swiftSettings: kernelSettings),
        .target(name: "DinoTraining",
                dependencies: ["DinoKernels", "DinoModel", "DinoData", "DinoEval", "DinoPictures",
                               .product(name: "Yams", package: "Yams")],
                swiftSettings: kernelSettings),
        .target(name: "DinoPictures", dependencies: ["DinoData"]),
        // Open MPI, opened at run time (dlopen): nothing of MPI is needed to build or to run without mpirun.
        .target(name: "DinoDistributed", dependencies: ["DinoKernels"]),
        .target(name: "DinoEval", dependencies: ["DinoKernels", "DinoModel", "DinoData", "DinoPictures"],
                swiftSettings: kernelSettings),

        // MARK: Executables
        .executableTarget(name: "dino",
                          dependencies: ["DinoKernels", "DinoModel", "DinoData", "DinoTraining", "DinoEval", "DinoDistributed",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "dino-bench",
                          dependencies: ["CDinoKernels", "COpenBLAS", "DinoKernels", "DinoModel", "DinoData", "DinoTraining", "DinoDistributed",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "Benchmarks/Sources/dino-bench", swiftSettings: kernelSettings),

        // MARK: Tests
        .target(name: "TestSupport", dependencies: ["DinoKernels", "DinoModel"], path: "Tests/TestSupport"),
        // The readers of untrusted input as fuzz targets, their seed corpora, and libFuzzer's driver (Tests/Fuzz/fuzz.sh).
        .target(name: "FuzzTargets", dependencies: ["DinoKernels", "DinoModel", "DinoData", "DinoEval", "DinoTraining"],
                path: "Tests/Fuzz/Targets"),
        .executableTarget(name: "dino-fuzz", dependencies: ["FuzzTargets"], path: "Tests/Fuzz/Driver"),
        .testTarget(name: "DinoKernelsTests", dependencies: ["DinoKernels", "CDinoKernels", "TestSupport"]),
        .testTarget(name: "DinoModelTests", dependencies: ["DinoKernels", "DinoModel", "TestSupport"]),
        .testTarget(name: "DinoDataTests", dependencies: ["DinoData", "TestSupport"]),
        .testTarget(name: "DinoTrainingTests",
                    dependencies: ["DinoTraining", "DinoModel", "DinoData", "DinoEval", "TestSupport"]),
        .testTarget(name: "DinoEvalTests", dependencies: ["DinoEval", "DinoData", "DinoModel", "TestSupport"]),
        .testTarget(name: "DinoPicturesTests", dependencies: ["DinoPictures", "DinoData"]),
        // Runs the built `dino` executable as a process, as a user does.
        .testTarget(name: "DinoCLITests", dependencies: ["DinoEval", "DinoData", "DinoModel", "DinoTraining", "DinoKernels", "FuzzTargets"]),
    ],
    swiftLanguageModes: [.v5]
)
