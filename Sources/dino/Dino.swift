import ArgumentParser
import DinoKernels
import Foundation

@main
struct Dino: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dino",
        abstract: "Self-supervised Vision Transformers (DINO) on the CPU: train, look at attention, evaluate features.",
        subcommands: [Quickstart.self, Train.self, Features.self, KNN.self, Linear.self, Attention.self, Init.self])
}

/// Options every compute-heavy command takes.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for the kernels (default: all cores, or DINO_THREADS).")
    var threads: Int?

    func apply() throws {
        if let threads {
            guard threads > 0 else { throw ValidationError("--threads must be at least 1") }
            Parallel.setThreadCount(threads)
        }
    }
}

/// Runs library code, turning its errors into a one-line message and exit code 1 (no stack trace).
func runReportingErrors(_ body: () throws -> Void) throws {
    setvbuf(stdout, nil, _IOLBF, 0)  // progress lines appear as they happen, also when piped to a file
    do { try body() } catch let error as DinoError {
        FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
        throw ExitCode.failure
    }
}

func parseFloats(_ text: String?, name: String) throws -> [Float]? {
    guard let text else { return nil }
    let values = text.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
        throw ValidationError("\(name) takes comma-separated numbers, e.g. 0.485,0.456,0.406")
    }
    return values.compactMap { $0 }
}

/// A one-line progress display that rewrites itself on a terminal and prints sparse lines otherwise.
final class ProgressLine {
    let isTerminal = isatty(STDERR_FILENO) != 0
    var lastPrint = Date.distantPast

    func update(_ text: String, force: Bool = false) {
        let now = Date()
        if isTerminal {
            if force || now.timeIntervalSince(lastPrint) > 0.1 {
                FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8)); lastPrint = now
            }
        } else if force || now.timeIntervalSince(lastPrint) > 10 {
            FileHandle.standardError.write(Data("\(text)\n".utf8)); lastPrint = now
        }
    }

    func finish() { if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) } }
}
