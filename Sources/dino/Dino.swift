import ArgumentParser
import DinoKernels
import DinoModel
import Foundation

@main
struct Dino: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dino",
        abstract: "Self-supervised Vision Transformers (DINO) on the CPU: train, look at attention, evaluate features.",
        version: "dino \(DinoVersion.number)\n\(DinoVersion.kernels)",
        subcommands: [Quickstart.self, Train.self, Features.self, KNN.self, Linear.self, Attention.self, PCA.self, Report.self, Init.self, Convert.self])

    /// Every failure ends as one line on stderr, `error: WHAT` (with `see 'dino SUB --help'` when the
    /// command line itself is wrong), and a non-zero exit code: 1 for a failed run, 64 for a bad command
    /// line. ArgumentParser's default would print the usage text after the message.
    static func main() {
        signal(SIGXFSZ, SIG_IGN)  // past a file-size limit a write fails with an error instead of killing the process
        restartWithBetterBLASKernels()
        let commands = configuration.subcommands.map { $0._commandName }
        // ArgumentParser would say "Unexpected argument" (or print the overview for `help NAME`); a
        // mistyped command deserves the list.
        let arguments = Array(CommandLine.arguments.dropFirst())
        let named = arguments.first == "help" ? arguments.dropFirst().first : arguments.first
        if let named, !named.hasPrefix("-"), !commands.contains(named), named != "help" {
            let guess = closestName(to: named, among: commands).map { "; did you mean '\($0)'?" } ?? ""
            FileHandle.standardError.write(Data("error: '\(named)' is not a dino command\(guess) (\(commands.joined(separator: ", "))); see 'dino --help'\n".utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        // Only `train` divides its work among MPI processes; any other command under mpirun would run once
        // per process, each printing the same lines and writing the same files: rank 0 runs it alone.
        let environment = ProcessInfo.processInfo.environment
        if let named, named != "train", commands.contains(named),
           let size = environment["OMPI_COMM_WORLD_SIZE"].flatMap(Int.init), size > 1 {
            if (environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0) != 0 { Foundation.exit(0) }
            FileHandle.standardError.write(Data("note: only dino train divides its work among MPI processes; dino \(named) runs once, in rank 0 of the \(size)\n".utf8))
        }
        do {
            var command = try parseAsRoot(negativeValuesAttached(arguments))
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)  // already reported by runReportingErrors
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }  // --help, --version
            var message = Self.message(for: error).split(whereSeparator: \.isNewline).joined(separator: " ")
            if message.hasSuffix(".") { message.removeLast() }  // the hint follows after a semicolon
            let sub = commands.first { arguments.first == $0 }
            // ArgumentParser reports a missing --output before a mistyped option: the typo is the news.
            if code.rawValue == 64, !message.hasPrefix("Unknown option"),
               let command = configuration.subcommands.first(where: { $0._commandName == sub }),
               let unknown = firstUnknownOption(Array(arguments.dropFirst()), known: optionNames(of: command)) {
                message = "Unknown option '\(unknown.option)'" + (unknown.guess.map { ". Did you mean '\($0)'?" } ?? "")
            }
            let hint = code.rawValue == 64 ? "; see 'dino\(sub.map { " " + $0 } ?? "") --help'" : ""
            FileHandle.standardError.write(Data("error: \(message)\(hint)\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }
}

/// The long option names (`--name`) a command's help lists.
func optionNames(of command: ParsableCommand.Type) -> Set<String> {
    let help = command.helpMessage(columns: 10_000)
    var names: Set<String> = []
    var scanner = help[...]
    while let start = scanner.range(of: "--") {
        let rest = scanner[start.upperBound...]
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "-" }
        if let first = name.first, first.isLetter { names.insert("--" + name) }
        scanner = rest.dropFirst(name.count)
    }
    return names
}

/// The first `--name` (or `--name=value`) argument before any `--` terminator that is not in `known`,
/// with the closest known name as a guess.
func firstUnknownOption(_ arguments: [String], known: Set<String>) -> (option: String, guess: String?)? {
    for argument in arguments {
        if argument == "--" { return nil }
        guard argument.hasPrefix("--"), argument.count > 2 else { continue }
        let option = String(argument.prefix { $0 != "=" })
        if !known.contains(option) { return (option, closestName(to: option, among: known.sorted())) }
    }
    return nil
}

/// `--k -3` as `--k=-3`: ArgumentParser reads a token that starts with a dash as an option, so a
/// negative number after an option would end as "Missing value for '--k'"; attached, it reaches the
/// option's own check ("--k takes comma-separated positive integers"). A negative number after a flag
/// becomes `--flag=-3`, which ArgumentParser refuses as a value a flag does not take. Arguments after
/// a `--` terminator are positional and pass as they are.
func negativeValuesAttached(_ arguments: [String]) -> [String] {
    var result: [String] = []
    for argument in arguments {
        if !result.contains("--"), let last = result.last, last.hasPrefix("--"), !last.contains("="),
           argument.count > 1, argument.hasPrefix("-"), Double(argument) != nil {
            result[result.count - 1] = last + "=" + argument
        } else {
            result.append(argument)
        }
    }
    return result
}

/// Starts this program again with `OPENBLAS_CORETYPE` set when OpenBLAS fell back to its SSE3 kernels on
/// a CPU it does not know (float32 GEMMs at a third of the rate); the variable, once set, keeps this
/// from happening twice. Where the restart fails, the run goes on as it is.
func restartWithBetterBLASKernels() {
    #if os(Linux)
    guard let coreType = BLASKernels.replacementForThisMachine else { return }
    setenv("OPENBLAS_CORETYPE", coreType, 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
    unsetenv("OPENBLAS_CORETYPE")
    #endif
}

/// Fails validation with `message` unless `condition` holds.
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw ValidationError(message()) }
}

/// Refuses an empty or blank path: Foundation resolves it to the working folder, where a run, features
/// or pictures would land unasked.
func requirePath(_ value: String?, _ option: String) throws {
    guard let value else { return }
    try require(!value.trimmingCharacters(in: .whitespaces).isEmpty, "\(option) is empty: give a path")
}

/// Refuses an empty `--image` path, and a folder with the way to give its images (the shell's glob).
func requireImagePath(_ value: String) throws {
    try requirePath(value, "--image")
    try require(isFolder(value) != true, "--image \(value) is a folder: give its images, e.g. --image \((value as NSString).appendingPathComponent("*.jpg"))")
}

/// Whether `path` is a folder (true), a file (false), or nothing yet (nil).
func isFolder(_ path: String) -> Bool? {
    var folder: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &folder) ? folder.boolValue : nil
}

/// Refuses an output folder that names an existing file (a missing folder is created).
func requireFolderPath(_ value: String, _ option: String) throws {
    try requirePath(value, option)
    try require(isFolder(value) != false, "\(option) \(value) is a file; give a folder (it is created if missing)")
    try requireNoFileAbove(value, option)
}

/// Refuses an output file that names an existing folder (`example` is a file name to suggest inside it).
func requireFilePath(_ value: String, _ option: String, example: String) throws {
    try requirePath(value, option)
    try require(isFolder(value) != true, "\(option) \(value) is a folder; give a file name, e.g. \((value as NSString).appendingPathComponent(example))")
    try requireNoFileAbove(value, option)
}

/// Refuses an output path below a file (`notes.txt/run`): no folder can be made there, and the command
/// would otherwise find out only when it writes, after its work.
func requireNoFileAbove(_ value: String, _ option: String) throws {
    var parent = URL(fileURLWithPath: value).standardizedFileURL.deletingLastPathComponent()
    while parent.path != "/" && isFolder(parent.path) == nil { parent = parent.deletingLastPathComponent() }
    try require(isFolder(parent.path) != false, "\(option) \(value) lies under \(parent.path), which is a file; give a path in a folder")
}

/// Options every compute-heavy command takes.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for the kernels (default: all cores, or DINO_THREADS).")
    var threads: Int?

    func validate() throws {
        try require(threads.map { (1...1024).contains($0) } ?? true, "--threads must be 1...1024")
        // The library falls back to all cores on a DINO_THREADS it cannot use; a user who set it meant something.
        if threads == nil, let text = ProcessInfo.processInfo.environment["DINO_THREADS"], !text.isEmpty {  // empty: unset
            try require(Int(text).map { (1...1024).contains($0) } ?? false,
                        "DINO_THREADS=\(text) is not a thread count in 1...1024: fix or unset it, or give --threads")
        }
    }

    func apply() throws {
        if let threads { Parallel.setThreadCount(threads) }
    }
}

/// `--matmul-precision`: the network's matmuls in float32 or bfloat16, as the recipe key
/// `matmul_precision` sets them for training. Only the forward passes of the backbone run at it; the
/// k-NN similarities, the linear probe and PCA stay float32.
struct MatmulPrecisionOption: ParsableArguments {
    @Option(name: .customLong("matmul-precision"), help: "The network's matmuls: float32, or bfloat16 (operands rounded to bfloat16, sums in float; 1.2-1.5x the images/s on CPUs with AVX-512 BF16, about 2x more with AMX, float32 elsewhere). k-NN and the linear probe stay float32.")
    var matmulPrecision = "float32"

    func validate() throws {
        try require(GEMM.Precision(rawValue: matmulPrecision) != nil,
                    "--matmul-precision takes float32 or bfloat16, not '\(matmulPrecision)'")
    }

    /// Runs `body` with the matmuls at the requested precision, then restores the previous one; says
    /// on stderr (once per process) when this CPU cannot run bfloat16.
    func run<T>(_ body: () throws -> T) rethrows -> T {
        let requested = GEMM.Precision(rawValue: matmulPrecision) ?? .float32
        return try GEMM.withPrecision(requested) {
            if GEMM.precision != requested && !Self.noted {
                Self.noted = true
                FileHandle.standardError.write(Data("note: this CPU has no AVX-512 BF16, so the matmuls run in float32\n".utf8))
            }
            return try body()
        }
    }

    nonisolated(unsafe) private static var noted = false
}

/// How an error line starts: `error: `, or under mpirun on ranks other than 0 `rank N: error: ` (rank 0's
/// line is the one to read; the others' say whether a rank failed on its own).
let errorPrefix: String = {
    guard let rank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"], rank != "0" else { return "error: " }
    return "rank \(rank): error: "
}()

/// Runs library code, turning its errors into a one-line message and exit code 1 (no stack trace).
func runReportingErrors(_ body: () throws -> Void) throws {
    setvbuf(stdout, nil, _IOLBF, 0)  // progress lines appear as they happen, also when piped to a file
    do { try body() } catch let error as DinoError {
        FileHandle.standardError.write(Data("\(errorPrefix)\(error.message)\n".utf8))
        // mpirun ends the job when the first process exits with an error: the other ranks wait a moment,
        // so that rank 0 prints its line when it fails too (a bad recipe fails on every rank).
        if errorPrefix != "error: " { sleep(2) }
        throw ExitCode.failure
    } catch let error as ExitCode {
        throw error
    } catch {
        // Foundation's errors (a folder that cannot be created, a file that cannot be written) as one line.
        FileHandle.standardError.write(Data("\(errorPrefix)\(error.localizedDescription)\n".utf8))
        throw ExitCode.failure
    }
}

func parseFloats(_ text: String?, name: String) throws -> [Float]? {
    guard let text else { return nil }
    let values = text.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ $0?.isFinite ?? false }) else {
        throw DinoError("\(name) takes comma-separated numbers, e.g. 0.485,0.456,0.406")
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

/// Loads a backbone for a command, saying which layout a file from elsewhere was read as, with the
/// input normalization the command was given.
func loadBackbone(_ path: String, normalization: NormalizationOption? = nil) throws -> BackboneCheckpoint {
    var backbone = try BackboneCheckpoint.load(from: URL(fileURLWithPath: path))
    if let normalization {
        (backbone.mean, backbone.std) = try normalization.parsed.statistics(channels: backbone.config.inChannels,
                                                                            checkpoint: (backbone.mean, backbone.std))
    }
    if !backbone.source.hasPrefix("a dino ") {   // on stderr, like progress: stdout may be JSON
        FileHandle.standardError.write(Data("read \(path) as \(backbone.source)\n".utf8))
    }
    return backbone
}

/// What `--checkpoint` accepts, for every command's help.
let checkpointHelp = "Backbone or training checkpoint: this project's .safetensors; an official DINO or DINOv2 .pth (e.g. dino_deitsmall16_pretrain.pth, dinov2_vits14_reg4_pretrain.pth) or training checkpoint; timm's DINO / DINOv2 weights; a Hugging Face ViT or DINOv2 model folder (e.g. facebook/dino-vits16); a dino train run folder (its teacher_backbone.safetensors)."

/// `--normalization`, shared by the commands that run a backbone on images.
struct NormalizationOption: ParsableArguments {
    @Option(help: "Input normalization: checkpoint (the file's statistics; ImageNet's for files from elsewhere, as every published DINO and DINOv2 model), imagenet (photos), none (pixels in [0, 1]), or MEAN/STD, e.g. 0.5,0.5,0.5/0.25,0.25,0.25.")
    var normalization = "checkpoint"

    var parsed: InputNormalization { (try? InputNormalization(parsing: normalization)) ?? .checkpoint }

    func validate() throws { _ = try InputNormalization(parsing: normalization) }
}
