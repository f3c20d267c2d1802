import DinoKernels
import Foundation
import XCTest

/// `dino` itself, before any subcommand: the overview, `--version`, `help`, and a mistyped command.
final class RootCommandTests: XCTestCase {
    static let commands = ["quickstart", "train", "features", "knn", "linear", "attention", "pca", "report", "init", "convert"]

    func testNoArgumentsAndHelpListEveryCommand() {
        for arguments in [[], ["--help"], ["-h"], ["help"]] {
            let result = runDino(arguments, timeout: 30)
            assertSucceeded(result)
            XCTAssertTrue(result.stdout.hasPrefix("OVERVIEW: Self-supervised Vision Transformers"), "\(arguments): \(result.stdout)")
            for command in Self.commands {
                XCTAssertTrue(result.stdout.contains("\n  \(command) "), "\(arguments): the overview lacks \(command)")
            }
        }
        let help = runDino(["help", "knn"], timeout: 30)
        assertSucceeded(help)
        XCTAssertTrue(help.stdout.contains("USAGE: dino knn"), help.stdout)
    }

    /// The version and the kernels this machine runs, on stdout, exit 0: what a bug report needs.
    func testVersionNamesTheKernels() {
        let result = runDino(["--version"], timeout: 30)
        assertSucceeded(result)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "dino \(DinoVersion.number)", result.stdout)
        XCTAssertEqual(lines.count, 2, result.stdout)
        let kernels = lines.last ?? ""
        XCTAssertTrue(kernels.hasPrefix("kernels: OpenBLAS "), kernels)
        XCTAssertTrue(kernels.contains(GEMM.bfloat16Available ? "bfloat16 on " : "no bfloat16"), kernels)
        let threads = ProcessInfo.processInfo.environment["DINO_THREADS"] ?? "2"  // as startDino sets it
        XCTAssertTrue(kernels.hasSuffix(", \(threads) threads"), kernels)
        XCTAssertEqual(result.stderr, "")
        // After a command too, as ArgumentParser passes the flag down.
        let afterCommand = runDino(["knn", "--version"], timeout: 30)
        assertSucceeded(afterCommand)
        XCTAssertEqual(afterCommand.stdout, result.stdout)
        XCTAssertTrue(DinoVersion.number.split(separator: ".").count == 3
                      && DinoVersion.number.split(separator: ".").allSatisfy { Int($0) != nil }, DinoVersion.number)
    }

    /// A DINO_THREADS the kernels cannot use is refused by every compute command (the library would run
    /// on all cores, which is not what the user set); `--threads` overrides it.
    func testThreadCountFromTheEnvironmentIsChecked() {
        let knn = ["knn", "--raw-pixels", "--train", "fashion-mnist:train", "--validation", "--limit", "100"]
        for value in ["abc", "0", "-2", "2000", " 2"] {
            assertRefused(runDino(knn, timeout: 60, shellPrefix: "DINO_THREADS='\(value)'; export DINO_THREADS"),
                          "error: DINO_THREADS=\(value) is not a thread count in 1...1024: fix or unset it, or give --threads", status: 64)
        }
        let overridden = runDino(knn + ["--threads", "1"], timeout: 60, shellPrefix: "export DINO_THREADS=abc")
        assertSucceeded(overridden)
        XCTAssertTrue(overridden.stdout.contains("80 memory / 20 query images"), overridden.stdout)
        assertSucceeded(runDino(knn, timeout: 60, shellPrefix: "export DINO_THREADS=1"))
        assertSucceeded(runDino(knn, timeout: 60, shellPrefix: "export DINO_THREADS="))  // empty: as if unset
    }

    /// A mistyped command gets the list of commands and, when one is close, a guess; not ArgumentParser's
    /// "Unexpected argument".
    func testUnknownCommandsAndOptionsAreRefused() {
        assertRefused(runDino(["trian", "--recipe", "x.yaml"], timeout: 30),
                      "error: 'trian' is not a dino command; did you mean 'train'? (quickstart, train, features, knn, linear, attention, pca, report, init, convert); see 'dino --help'",
                      status: 64)
        assertRefused(runDino(["Train"], timeout: 30), "'Train' is not a dino command; did you mean 'train'?", status: 64)
        assertRefused(runDino(["attension"], timeout: 30), "did you mean 'attention'?", status: 64)
        assertRefused(runDino(["quick"], timeout: 30), "did you mean 'quickstart'?", status: 64)
        assertRefused(runDino(["kn"], timeout: 30), "did you mean 'knn'?", status: 64)
        let file = runDino(["photo.jpg"], timeout: 30)
        assertRefused(file, "error: 'photo.jpg' is not a dino command (quickstart,", status: 64)
        XCTAssertFalse(file.stderr.contains("did you mean"), file.stderr)
        // Options get ArgumentParser's own guess.
        let folder = makeTemporaryFolder()
        assertRefused(runDino(["train", "--output", "run", "--minute", "3"], in: folder, timeout: 30),
                      "Unknown option '--minute'. Did you mean '--minutes'?", status: 64)
        XCTAssertEqual(files(in: folder), [])
        // A mistyped option is reported before a missing one (ArgumentParser would name --output first).
        assertRefused(runDino(["train", "--minute", "3"], in: folder, timeout: 30),
                      "error: Unknown option '--minute'. Did you mean '--minutes'?; see 'dino train --help'", status: 64)
        assertRefused(runDino(["knn", "--chekpoint", "m.safetensors", "--k=20"], in: folder, timeout: 30),
                      "error: Unknown option '--chekpoint'. Did you mean '--checkpoint'?", status: 64)
        assertRefused(runDino(["features", "--checkpoint", "m.safetensors", "--frobnicate=2"], in: folder, timeout: 30),
                      "error: Unknown option '--frobnicate'; see 'dino features --help'", status: 64)
        // Known options and a missing one: the missing one, as before.
        assertRefused(runDino(["knn", "--checkpoint", "m.safetensors", "--k", "20", "--json"], in: folder, timeout: 30),
                      "error: Missing expected argument '--train <train>'", status: 64)
        XCTAssertEqual(files(in: folder), [])
        assertRefused(runDino(["--verbose"], timeout: 30), "Unknown option '--verbose'; see 'dino --help'", status: 64)
        assertRefused(runDino(["help", "frobnicate"], timeout: 30), "'frobnicate' is not a dino command", status: 64)
        assertRefused(runDino(["help", "lienar"], timeout: 30), "did you mean 'linear'?", status: 64)
    }
}
