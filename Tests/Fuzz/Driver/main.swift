import Foundation
import FuzzTargets

// dino-fuzz: the readers' fuzz driver.
//   dino-fuzz TARGET [libFuzzer options] [CORPUS...]   coverage-guided fuzzing (a build with -DLIBFUZZER; see fuzz.sh)
//   dino-fuzz replay TARGET FILE...                    runs files through a reader (reproduces a crash)
//   dino-fuzz seeds FOLDER                             writes the seed corpora
let arguments = CommandLine.arguments
let usage = "usage: dino-fuzz TARGET [libFuzzer options] | replay TARGET FILE... | seeds FOLDER; targets: "
    + ReaderTarget.allCases.map(\.rawValue).joined(separator: ", ")

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("dino-fuzz: \(message)\n".utf8))
    exit(2)
}

#if LIBFUZZER
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

nonisolated(unsafe) var fuzzedTarget = ReaderTarget.npy
#endif

switch arguments.dropFirst().first {
case "seeds":
    guard arguments.count == 3 else { fail(usage) }
    do { try SeedCorpus.write(to: URL(fileURLWithPath: arguments[2])) } catch { fail("\(error)") }
case "replay":
    guard arguments.count >= 4, let target = ReaderTarget(rawValue: arguments[2]) else { fail(usage) }
    for path in arguments.dropFirst(3) {
        guard let data = FileManager.default.contents(atPath: path) else { fail("cannot read \(path)") }
        target.run(data)
        print("\(path): no crash")
    }
case let name? where ReaderTarget(rawValue: name) != nil:
    #if LIBFUZZER
    fuzzedTarget = ReaderTarget(rawValue: name)!
    // libFuzzer sees the program name and the options after TARGET.
    var argv: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + arguments.dropFirst(2)).map { strdup($0) } + [nil]
    var argc = Int32(argv.count - 1)
    let status = argv.withUnsafeMutableBufferPointer { buffer -> Int32 in
        var base = buffer.baseAddress
        return LLVMFuzzerRunDriver(&argc, &base) { data, size in
            fuzzedTarget.run(size == 0 ? Data() : Data(bytes: data!, count: size))
            return 0
        }
    }
    exit(status)
    #else
    fail("this build has no libFuzzer: build with Tests/Fuzz/fuzz.sh")
    #endif
default:
    fail(usage)
}
