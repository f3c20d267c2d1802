// swift-tools-version:6.0
import PackageDescription

// A program that depends on dino by version, as another project would. Replace the URL with the
// repository you clone from; the test suite builds this with a tagged local clone.
let package = Package(
    name: "extract-features",
    platforms: [.macOS(.v13)],
    dependencies: [.package(url: "DINO_REPOSITORY_URL", from: "1.0.0")],
    targets: [
        .executableTarget(name: "extract-features",
                          dependencies: [.product(name: "DinoModel", package: "dino"), .product(name: "DinoEval", package: "dino"),
                                         .product(name: "DinoData", package: "dino")],
                          path: "Sources"),
    ]
)
