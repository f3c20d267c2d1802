import DinoKernels
import Foundation

/// A value of a checkpoint's pickle, as far as a state dict needs: plain data, containers, tensors, and
/// inert stand-ins for the few objects a training checkpoint also holds (an `argparse.Namespace`).
public indirect enum PickleValue: Sendable {
    case none, bool(Bool), int(Int), float(Double), string(String), bytes(Data)
    case list([PickleValue]), tuple([PickleValue]), dict([(key: PickleValue, value: PickleValue)])
    /// An allow-listed global, before it is called.
    case global(String)
    /// A storage named by a persistent id: element type, the archive key of its bytes, element count.
    case storage(TorchStorage)
    case tensor(TorchTensor)
    /// An object kept as its class name only; nothing of it is run.
    case object(String)
    case mark

    var depth: Int {
        switch self {
        case .list(let items), .tuple(let items): return 1 + (items.map(\.depth).max() ?? 0)
        case .dict(let pairs): return 1 + (pairs.map { max($0.key.depth, $0.value.depth) }.max() ?? 0)
        default: return 0
        }
    }
}

/// A storage of a `torch.save` archive: `data/KEY` holds `count` elements of `type`.
public struct TorchStorage: Sendable {
    public enum ElementType: String, Sendable {
        case float32 = "FloatStorage", float16 = "HalfStorage", bfloat16 = "BFloat16Storage", float64 = "DoubleStorage"
        case int64 = "LongStorage", int32 = "IntStorage", int16 = "ShortStorage", int8 = "CharStorage", uint8 = "ByteStorage",
             bool = "BoolStorage"
        public var width: Int {
            switch self {
            case .float64, .int64: return 8
            case .float32, .int32: return 4
            case .float16, .bfloat16, .int16: return 2
            case .int8, .uint8, .bool: return 1
            }
        }
    }
    public var type: ElementType
    public var key: String
    public var count: Int
}

/// A tensor view of a storage (`torch._utils._rebuild_tensor_v2`'s arguments).
public struct TorchTensor: Sendable {
    public var storage: TorchStorage
    public var offset: Int
    public var shape: [Int]
    public var strides: [Int]
}

/// A pickle reader that runs nothing: it knows the opcodes of pickle protocols 2–5 that `torch.save`
/// writes and an allow-list of globals (ordered dicts, tensor rebuilding, storage types, and inert
/// `argparse.Namespace` and NumPy scalars); any other global, or a call of anything that is not
/// allow-listed, is refused with an error naming it. Sizes are bounded by the input: every length is
/// checked against the bytes left, the memo and stack by the opcodes read, nesting at 64 levels.
public struct Unpickler {
    static let constructors: Set<String> = ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                                            "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"]
    /// Classes that load as inert objects: their state is kept as data, never acted on.
    static let inertClasses: Set<String> = ["argparse.Namespace", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                                            "numpy.dtype", "torch.Size"]
    static let maximumDepth = 64

    let bytes: [UInt8]
    let name: String
    var position = 0
    var stack: [PickleValue] = []
    var memo: [Int: PickleValue] = [:]

    public init(_ data: Data, name: String) { bytes = [UInt8](data); self.name = name }

    func refuse(_ why: String) -> DinoError { DinoError("\(name): \(why); the checkpoint may be corrupt or unsafe, and was not loaded") }

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - position else { throw refuse("the pickle ends inside a value") }
        defer { position += n }
        return bytes[position..<(position + n)]
    }
    mutating func byte() throws -> Int { Int(try take(1).first!) }
    mutating func little(_ n: Int) throws -> Int {
        try take(n).reversed().reduce(0) { $0 << 8 | Int($1) }
    }
    mutating func line() throws -> String {
        guard let end = bytes[position...].firstIndex(of: 0x0A), end - position <= 256 else { throw refuse("a global name without its end") }
        defer { position = end + 1 }
        return String(decoding: bytes[position..<end], as: UTF8.self)
    }
    mutating func pop() throws -> PickleValue {
        guard let v = stack.popLast() else { throw refuse("the pickle pops an empty stack") }
        return v
    }
    /// The values above the topmost mark, which is removed.
    mutating func popMark() throws -> [PickleValue] {
        guard let mark = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else {
            throw refuse("the pickle has no mark where one is needed")
        }
        let items = Array(stack[(mark + 1)...])
        stack.removeSubrange(mark...)
        return items
    }
    mutating func push(_ v: PickleValue) throws {
        guard v.depth <= Self.maximumDepth else { throw refuse("values nested more than \(Self.maximumDepth) deep") }
        guard stack.count < 1 << 20 else { throw refuse("a stack of more than a million values") }
        stack.append(v)
    }
    mutating func text(_ n: Int) throws -> PickleValue { .string(String(decoding: try take(n), as: UTF8.self)) }

    /// Adds `items` to the container on top of the stack (APPEND(S), SETITEM(S)).
    mutating func extendTop(_ items: [PickleValue], pairs: Bool) throws {
        var top = try pop()
        switch top {
        case .list(var list) where !pairs:
            top = .none; list += items; try push(.list(list))
        case .dict(var dict) where pairs:
            guard items.count % 2 == 0 else { throw refuse("a dict given an odd number of keys and values") }
            top = .none
            for i in stride(from: 0, to: items.count, by: 2) { dict.append((items[i], items[i + 1])) }
            try push(.dict(dict))
        case .object:
            try push(top)   // an inert object's items are dropped
        default:
            throw refuse("items added to something that is not a \(pairs ? "dict" : "list")")
        }
    }

    /// Reads the pickle and returns its value.
    public mutating func load() throws -> PickleValue {
        while true {
            let opcode = try byte()
            switch opcode {
            case 0x80: _ = try byte()                                         // PROTO
            case 0x95: _ = try take(8)                                        // FRAME
            case 0x2E: return try pop()                                       // STOP
            case 0x28: try push(.mark)                                        // MARK
            case 0x7D: try push(.dict([]))                                    // EMPTY_DICT
            case 0x5D: try push(.list([]))                                    // EMPTY_LIST
            case 0x29: try push(.tuple([]))                                   // EMPTY_TUPLE
            case 0x74: try push(.tuple(try popMark()))                        // TUPLE
            case 0x85: try push(.tuple([try pop()]))                          // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); try push(.tuple([a, b]))                    // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try push(.tuple([a, b, c]))  // TUPLE3
            case 0x6C: try push(.list(try popMark()))                         // LIST
            case 0x64:                                                        // DICT
                let items = try popMark()
                guard items.count % 2 == 0 else { throw refuse("a dict of an odd number of keys and values") }
                try push(.dict(stride(from: 0, to: items.count, by: 2).map { (items[$0], items[$0 + 1]) }))
            case 0x61: try extendTop([try pop()], pairs: false)               // APPEND
            case 0x65: let items = try popMark(); try extendTop(items, pairs: false)               // APPENDS
            case 0x73: let v = try pop(), k = try pop(); try extendTop([k, v], pairs: true)        // SETITEM
            case 0x75: let items = try popMark(); try extendTop(items, pairs: true)                // SETITEMS
            case 0x71: try put(try byte())                                    // BINPUT
            case 0x72: try put(try little(4))                                 // LONG_BINPUT
            case 0x94: try put(memo.count)                                    // MEMOIZE
            case 0x68: try get(try byte())                                    // BINGET
            case 0x6A: try get(try little(4))                                 // LONG_BINGET
            case 0x63:                                                        // GLOBAL
                let module = try line(), attribute = try line()
                try push(try global(module + "." + attribute))
            case 0x93:                                                        // STACK_GLOBAL
                guard case .string(let attribute) = try pop(), case .string(let module) = try pop() else {
                    throw refuse("a global named by something that is not text")
                }
                try push(try global(module + "." + attribute))
            case 0x52: let arguments = try pop(), callee = try pop(); try push(try call(callee, arguments))  // REDUCE
            case 0x81: let arguments = try pop(), cls = try pop(); try push(try call(cls, arguments))        // NEWOBJ
            case 0x62: _ = try pop(); guard !stack.isEmpty else { throw refuse("state for nothing") }        // BUILD: state ignored
            case 0x51: try push(try storage(try pop()))                       // BINPERSID
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try little(4)))))   // BININT
            case 0x4B: try push(.int(try byte()))                             // BININT1
            case 0x4D: try push(.int(try little(2)))                          // BININT2
            case 0x8A:                                                        // LONG1
                let n = try byte()
                guard n <= 8 else { throw refuse("an integer of \(n) bytes") }
                let raw = try take(n)
                var value = 0
                for (i, b) in raw.enumerated() { value |= Int(b) << (8 * i) }
                if n > 0 && n < 8 && raw.last! & 0x80 != 0 { value -= 1 << (8 * n) }
                try push(.int(value))
            case 0x47: try push(.float(Double(bitPattern: try take(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))  // BINFLOAT (big-endian)
            case 0x58: try push(try text(try little(4)))                      // BINUNICODE
            case 0x8C: try push(try text(try byte()))                         // SHORT_BINUNICODE
            case 0x8D: try push(try text(try little(8)))                      // BINUNICODE8
            case 0x42: try push(.bytes(Data(try take(try little(4)))))        // BINBYTES
            case 0x43: try push(.bytes(Data(try take(try byte()))))           // SHORT_BINBYTES
            case 0x8E: try push(.bytes(Data(try take(try little(8)))))        // BINBYTES8
            case 0x30: _ = try pop()                                          // POP
            case 0x31: _ = try popMark()                                      // POP_MARK
            case 0x32: guard let top = stack.last else { throw refuse("DUP of nothing") }; try push(top)  // DUP
            default:
                throw refuse(String(format: "pickle opcode 0x%02x, which a state dict does not use", opcode))
            }
        }
    }

    mutating func put(_ index: Int) throws {
        guard let top = stack.last else { throw refuse("a memo entry of nothing") }
        guard index >= 0, index < 1 << 24 else { throw refuse("a memo index of \(index)") }
        memo[index] = top
    }

    mutating func get(_ index: Int) throws {
        guard let value = memo[index] else { throw refuse("a memo entry that was never stored") }
        try push(value)
    }

    func global(_ qualified: String) throws -> PickleValue {
        if Self.constructors.contains(qualified) || Self.inertClasses.contains(qualified) { return .global(qualified) }
        if qualified.hasPrefix("torch."), let type = TorchStorage.ElementType(rawValue: String(qualified.dropFirst(6))) {
            return .global("storage:" + type.rawValue)
        }
        throw refuse("it refers to '\(qualified)', which a checkpoint of tensors has no need of (only state dicts, tensors and argparse.Namespace are read)")
    }

    func call(_ callee: PickleValue, _ arguments: PickleValue) throws -> PickleValue {
        guard case .global(let function) = callee else { throw refuse("it calls something that is not an allowed global") }
        guard case .tuple(let args) = arguments else { throw refuse("\(function) is called without an argument tuple") }
        switch function {
        case "collections.OrderedDict":
            guard args.isEmpty else { throw refuse("an OrderedDict built from arguments") }
            return .dict([])
        case "torch._utils._rebuild_tensor_v2":
            guard args.count >= 4, case .storage(let storage) = args[0], case .int(let offset) = args[1],
                  case .tuple(let size) = args[2], case .tuple(let stride) = args[3] else {
                throw refuse("a tensor rebuilt from arguments of the wrong kind")
            }
            let shape = try size.map { v -> Int in guard case .int(let i) = v else { throw refuse("a tensor size that is not an integer") }; return i }
            let strides = try stride.map { v -> Int in guard case .int(let i) = v else { throw refuse("a tensor stride that is not an integer") }; return i }
            guard shape.count == strides.count else { throw refuse("a tensor whose size and stride differ in length") }
            return .tensor(TorchTensor(storage: storage, offset: offset, shape: shape, strides: strides))
        case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
            guard let first = args.first, case .tensor = first else { throw refuse("a parameter rebuilt from something that is not a tensor") }
            return first
        default:
            if Self.inertClasses.contains(function) { return .object(function) }
            throw refuse("it calls '\(function)', which is not allowed")
        }
    }

    func storage(_ id: PickleValue) throws -> PickleValue {
        guard case .tuple(let parts) = id, parts.count >= 5, case .string("storage") = parts[0],
              case .global(let typeName) = parts[1], typeName.hasPrefix("storage:"),
              let type = TorchStorage.ElementType(rawValue: String(typeName.dropFirst(8))),
              case .string(let key) = parts[2], case .int(let count) = parts[4], count >= 0 else {
            throw refuse("a storage reference of an unknown kind")
        }
        return .storage(TorchStorage(type: type, key: key, count: count))
    }
}
