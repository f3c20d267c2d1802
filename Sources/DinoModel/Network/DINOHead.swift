import DinoKernels

/// Activations of the head for M rows (one per image of a crop group, or per masked patch).
public final class HeadActivations {
    /// The rows the buffers hold.
    public let capacity: Int
    /// The rows the next forward and backward use (at most `capacity`; the masked-patch head's count
    /// changes from step to step).
    public var rows: Int { didSet { precondition(rows >= 0 && rows <= capacity, "\(rows) head rows exceed the capacity \(capacity)") } }
    let input: FloatBuffer                 // (M, in)
    let preActivations: [FloatBuffer]      // per hidden layer (M, hidden): Linear outputs before GELU
    let postActivations: [FloatBuffer]     // per hidden layer (M, hidden): after GELU
    let bottleneck: FloatBuffer            // (M, bottleneck)
    let normalizedBottleneck: FloatBuffer  // (M, bottleneck)
    let bottleneckNorms: FloatBuffer       // (M)
    let lastWeight: FloatBuffer            // (K, bottleneck): g·v/‖v‖
    let lastNorms: FloatBuffer             // (K)
    /// The head's output `(M, K)`.
    public let logits: FloatBuffer
    lazy var dLastWeight = FloatBuffer(count: lastWeight.count)
    lazy var dNormalized = FloatBuffer(count: bottleneck.count)
    lazy var dBottleneck = FloatBuffer(count: bottleneck.count)
    lazy var dHiddenA = FloatBuffer(count: capacity * config.hiddenDim)
    lazy var dHiddenB = FloatBuffer(count: capacity * config.hiddenDim)
    let config: HeadConfig

    public init(config: HeadConfig, rows: Int) {
        self.config = config
        self.capacity = rows
        self.rows = rows
        input = FloatBuffer(count: rows * config.inDim)
        let hiddenLayers = config.layerCount - 1
        preActivations = (0..<hiddenLayers).map { _ in FloatBuffer(count: rows * config.hiddenDim) }
        postActivations = (0..<hiddenLayers).map { _ in FloatBuffer(count: rows * config.hiddenDim) }
        bottleneck = FloatBuffer(count: rows * config.bottleneckDim)
        normalizedBottleneck = FloatBuffer(count: rows * config.bottleneckDim)
        bottleneckNorms = FloatBuffer(count: rows)
        lastWeight = FloatBuffer(count: config.outDim * config.bottleneckDim)
        lastNorms = FloatBuffer(count: config.outDim)
        logits = FloatBuffer(count: rows * config.outDim)
    }

    /// The head's input rows `(M, in)`: write the backbone's CLS tokens here before `forward`.
    public var inputPointer: UnsafeMutablePointer<Float> { input.pointer }
}

/// The DINO projection head (official `DINOHead`, no batch norm):
/// `Linear → GELU → … → Linear(bottleneck)`, `z = x/‖x‖`, `logits = z·Wᵀ`, `W_k = g_k·v_k/‖v_k‖`.
public struct DINOHead: Sendable {
    public let config: HeadConfig
    let linears: [(weight: Int, bias: Int, input: Int, output: Int)]
    let magnitude: Int, direction: Int

    /// (input, output) sizes of the MLP's Linear layers.
    public static func layerSizes(_ c: HeadConfig) -> [(Int, Int)] {
        if c.layerCount == 1 { return [(c.inDim, c.bottleneckDim)] }
        return [(c.inDim, c.hiddenDim)] + Array(repeating: (c.hiddenDim, c.hiddenDim), count: c.layerCount - 2)
            + [(c.hiddenDim, c.bottleneckDim)]
    }

    /// The official module name of Linear layer i (`nn.Sequential` puts GELUs at the odd indices).
    public static func linearName(layer i: Int, count: Int) -> String {
        count == 1 ? "head.mlp" : "head.mlp.\(2 * i)"
    }

    public init(config: HeadConfig, layout: ParameterLayout) {
        self.config = config
        linears = Self.layerSizes(config).enumerated().map { i, size in
            let name = Self.linearName(layer: i, count: config.layerCount)
            return (layout.offset(name + ".weight"), layout.offset(name + ".bias"), size.0, size.1)
        }
        magnitude = layout.offset("head.last_layer.weight_g")
        direction = layout.offset("head.last_layer.weight_v")
    }

    /// logits = head(activations.input).
    public func forward(parameters p: UnsafePointer<Float>, activations a: HeadActivations) {
        let m = a.rows, c = config
        var x = UnsafePointer(a.input.pointer)
        for (i, layer) in linears.enumerated() {
            let isLast = i == linears.count - 1
            if isLast {
                Linear.forward(output: a.bottleneck.pointer, input: x, weight: p + layer.weight, bias: p + layer.bias,
                               rows: m, inputSize: layer.input, outputSize: layer.output)
            } else {
                Linear.forwardGELU(output: a.preActivations[i].pointer, activated: a.postActivations[i].pointer, input: x,
                                   weight: p + layer.weight, bias: p + layer.bias,
                                   rows: m, inputSize: layer.input, outputSize: layer.output)
                x = UnsafePointer(a.postActivations[i].pointer)
            }
        }
        L2Normalize.forward(output: a.normalizedBottleneck.pointer, norms: a.bottleneckNorms.pointer,
                            input: a.bottleneck.pointer, rows: m, columns: c.bottleneckDim)
        WeightNorm.forward(weight: a.lastWeight.pointer, norms: a.lastNorms.pointer, direction: p + direction,
                           magnitude: p + magnitude, rows: c.outDim, columns: c.bottleneckDim)
        Linear.forward(output: a.logits.pointer, input: a.normalizedBottleneck.pointer, weight: a.lastWeight.pointer,
                       bias: nil, rows: m, inputSize: c.bottleneckDim, outputSize: c.outDim)
    }

    /// Accumulates parameter gradients and dInput `(M, in)` from dLogits `(M, K)`.
    /// - Parameter lastLayerGradient: false while the last layer is frozen: its gradient is then not
    ///   computed at all (the optimizer skips it, as the official `cancel_gradients_last_layer`).
    public func backward(gradients g: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>,
                         parameters p: UnsafePointer<Float>, dLogits: UnsafePointer<Float>,
                         activations a: HeadActivations, lastLayerGradient: Bool = true) {
        let m = a.rows, c = config
        a.dNormalized.zero()
        if lastLayerGradient { a.dLastWeight.zero() }
        Linear.backward(dInput: a.dNormalized.pointer, dWeight: lastLayerGradient ? a.dLastWeight.pointer : nil,
                        dBias: nil, dOutput: dLogits, input: a.normalizedBottleneck.pointer,
                        weight: a.lastWeight.pointer, rows: m, inputSize: c.bottleneckDim, outputSize: c.outDim)
        if lastLayerGradient {
            WeightNorm.backward(dDirection: g + direction, dMagnitude: c.normLastLayer ? nil : g + magnitude,
                                dWeight: a.dLastWeight.pointer, direction: p + direction, magnitude: p + magnitude,
                                norms: a.lastNorms.pointer, rows: c.outDim, columns: c.bottleneckDim)
        }
        a.dBottleneck.zero()
        L2Normalize.backward(dInput: a.dBottleneck.pointer, dOutput: a.dNormalized.pointer,
                             output: a.normalizedBottleneck.pointer, norms: a.bottleneckNorms.pointer,
                             rows: m, columns: c.bottleneckDim)
        var dOutput = UnsafePointer(a.dBottleneck.pointer)
        for i in stride(from: linears.count - 1, through: 0, by: -1) {
            let layer = linears[i]
            let input = i == 0 ? UnsafePointer(a.input.pointer) : UnsafePointer(a.postActivations[i - 1].pointer)
            let dIn: UnsafeMutablePointer<Float>
            if i == 0 {
                dIn = dInput
            } else {
                dIn = (i % 2 == 1 ? a.dHiddenA : a.dHiddenB).pointer
                dIn.update(repeating: 0, count: m * layer.input)
            }
            Linear.backward(dInput: dIn, dWeight: g + layer.weight, dBias: g + layer.bias, dOutput: dOutput,
                            input: input, weight: p + layer.weight, rows: m, inputSize: layer.input, outputSize: layer.output)
            if i > 0 {
                GELU.backwardInPlace(gradient: dIn, input: a.preActivations[i - 1].pointer, count: m * layer.input)
                dOutput = UnsafePointer(dIn)
            }
        }
    }
}
