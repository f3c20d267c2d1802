import DinoKernels

/// The weight-normalized last layer of one parameter set, `W_k = g_k·v_k/‖v_k‖` `(K, bottleneck)`:
/// computed once per parameter update (`DINOHead.prepareLastLayer`) and read by every forward and
/// backward on those parameters, so crop groups and batch shards share one copy of the largest tensor
/// of the head (65536 × 256 for ImageNet's head).
public final class HeadLastLayer {
    let weight: FloatBuffer   // (K, bottleneck)
    let norms: FloatBuffer    // (K): ‖v_k‖
    /// dL/dW `(K, bottleneck)`, summed over every row group of a step before the weight-norm backward
    /// (lazy: the teacher's is never made; touched by one thread at a time).
    public lazy var gradient = FloatBuffer(count: weight.count)

    public init(config: HeadConfig) {
        weight = FloatBuffer(count: config.outDim * config.bottleneckDim)
        norms = FloatBuffer(count: config.outDim)
    }
}

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
    /// The last layer these rows are multiplied by (shared when given at `init`).
    public let lastLayer: HeadLastLayer
    /// The head's output `(M, K)`.
    public let logits: FloatBuffer
    /// The backward's scratch, allocated up front (not lazily: batch shards run the backward of
    /// disjoint row ranges on two threads at once); nil for forward-only activations.
    let gradientScratch: (normalized: FloatBuffer, bottleneck: FloatBuffer, hiddenA: FloatBuffer, hiddenB: FloatBuffer)?
    let config: HeadConfig

    /// - Parameters:
    ///   - lastLayer: the weight-normalized last layer to share with other row groups on the same
    ///     parameters (a private one when nil).
    ///   - backward: false for rows that are never differentiated (the teacher's), which then skip the
    ///     backward's scratch.
    public init(config: HeadConfig, rows: Int, lastLayer: HeadLastLayer? = nil, backward: Bool = true) {
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
        self.lastLayer = lastLayer ?? HeadLastLayer(config: config)
        logits = FloatBuffer(count: rows * config.outDim)
        gradientScratch = backward ? (FloatBuffer(count: rows * config.bottleneckDim), FloatBuffer(count: rows * config.bottleneckDim),
                                      FloatBuffer(count: rows * config.hiddenDim), FloatBuffer(count: rows * config.hiddenDim)) : nil
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

    /// W = g·v/‖v‖ into `lastLayer` (`WeightNorm.forward`): once after every change of the parameters,
    /// before any `forward(parameters:activations:rows:)` on them.
    public func prepareLastLayer(parameters p: UnsafePointer<Float>, lastLayer l: HeadLastLayer) {
        WeightNorm.forward(weight: l.weight.pointer, norms: l.norms.pointer, direction: p + direction,
                           magnitude: p + magnitude, rows: config.outDim, columns: config.bottleneckDim)
    }

    /// logits = head(activations.input) for all rows, the last layer's weight included.
    public func forward(parameters p: UnsafePointer<Float>, activations a: HeadActivations) {
        prepareLastLayer(parameters: p, lastLayer: a.lastLayer)
        forward(parameters: p, activations: a, rows: 0..<a.rows)
    }

    /// logits = head(input) for the rows `rows` `(M, …)` only, reading the last layer's weight that
    /// `prepareLastLayer` wrote: rows are independent, so batch shards run disjoint ranges side by side.
    public func forward(parameters p: UnsafePointer<Float>, activations a: HeadActivations, rows: Range<Int>) {
        let m = rows.count, first = rows.lowerBound, c = config
        guard m > 0 else { return }
        var x = UnsafePointer(a.input.pointer + first * c.inDim)
        for (i, layer) in linears.enumerated() {
            if i == linears.count - 1 {
                Linear.forward(output: a.bottleneck.pointer + first * layer.output, input: x, weight: p + layer.weight,
                               bias: p + layer.bias, rows: m, inputSize: layer.input, outputSize: layer.output)
            } else {
                let activated = a.postActivations[i].pointer + first * layer.output
                Linear.forwardGELU(output: a.preActivations[i].pointer + first * layer.output, activated: activated, input: x,
                                   weight: p + layer.weight, bias: p + layer.bias,
                                   rows: m, inputSize: layer.input, outputSize: layer.output)
                x = UnsafePointer(activated)
            }
        }
        let bottleneck = c.bottleneckDim
        L2Normalize.forward(output: a.normalizedBottleneck.pointer + first * bottleneck, norms: a.bottleneckNorms.pointer + first,
                            input: a.bottleneck.pointer + first * bottleneck, rows: m, columns: bottleneck)
        Linear.forward(output: a.logits.pointer + first * c.outDim, input: a.normalizedBottleneck.pointer + first * bottleneck,
                       weight: a.lastLayer.weight.pointer, bias: nil, rows: m, inputSize: bottleneck, outputSize: c.outDim)
    }

    /// Accumulates parameter gradients and dInput `(M, in)` from dLogits `(M, K)`, all rows.
    /// - Parameter lastLayerGradient: false while the last layer is frozen: its gradient is then not
    ///   computed at all (the optimizer skips it, as the official `cancel_gradients_last_layer`).
    public func backward(gradients g: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>,
                         parameters p: UnsafePointer<Float>, dLogits: UnsafePointer<Float>,
                         activations a: HeadActivations, lastLayerGradient: Bool = true) {
        if lastLayerGradient {
            backwardLastLayer(gradients: g, parameters: p, lastLayer: a.lastLayer, uses: [(dLogits, a)])
        }
        backward(gradients: g, dInput: dInput, parameters: p, dLogits: dLogits, activations: a, rows: 0..<a.rows)
    }

    /// One row group that went through a last layer in a step: its upstream gradient `(M, K)` and activations.
    public typealias LastLayerUse = (dLogits: UnsafePointer<Float>, activations: HeadActivations)

    /// The last layer's backward for a step: dW = Σ over `uses` of dLogitsᵀ·normalized `(K, bottleneck)`,
    /// one product per row group whatever the shards, then through the weight norm W = g·v/‖v‖:
    /// accumulates `weight_v`'s gradient into `g`, and `weight_g`'s unless `norm_last_layer` fixes it.
    /// Every use must have gone through `lastLayer` (its weight and norms are this step's).
    public func backwardLastLayer(gradients g: UnsafeMutablePointer<Float>, parameters p: UnsafePointer<Float>,
                                  lastLayer l: HeadLastLayer, uses: [LastLayerUse]) {
        l.gradient.zero()
        for (dLogits, a) in uses where a.rows > 0 {
            precondition(a.lastLayer === l, "a row group that went through another last layer")
            Linear.backward(dInput: nil, dWeight: l.gradient.pointer, dBias: nil, dOutput: dLogits,
                            input: a.normalizedBottleneck.pointer, weight: l.weight.pointer, rows: a.rows,
                            inputSize: config.bottleneckDim, outputSize: config.outDim)
        }
        WeightNorm.backward(dDirection: g + direction, dMagnitude: config.normLastLayer ? nil : g + magnitude,
                            dWeight: l.gradient.pointer, direction: p + direction, magnitude: p + magnitude,
                            norms: l.norms.pointer, rows: config.outDim, columns: config.bottleneckDim)
    }

    /// The backward of the rows `rows` below the last layer's weight: dNormalized = dLogits·W, then the
    /// L2 norm and the MLP. Accumulates the MLP's gradients into `g` and dInput's rows; `dLogits` and
    /// `dInput` point at row 0. Leaves the last layer's gradient to `backwardLastLayer`.
    public func backward(gradients g: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>,
                         parameters p: UnsafePointer<Float>, dLogits: UnsafePointer<Float>,
                         activations a: HeadActivations, rows: Range<Int>) {
        let m = rows.count, first = rows.lowerBound, c = config, bottleneck = c.bottleneckDim
        guard m > 0 else { return }
        guard let scratch = a.gradientScratch else { preconditionFailure("head activations made with backward: false") }
        let dNormalized = scratch.normalized.pointer + first * bottleneck, dBottleneck = scratch.bottleneck.pointer + first * bottleneck
        Linear.backward(dInput: dNormalized, dWeight: nil, dBias: nil, dOutput: dLogits + first * c.outDim,
                        input: a.normalizedBottleneck.pointer + first * bottleneck, weight: a.lastLayer.weight.pointer,
                        rows: m, inputSize: bottleneck, outputSize: c.outDim, overwriteInput: true)
        dBottleneck.update(repeating: 0, count: m * bottleneck)
        L2Normalize.backward(dInput: dBottleneck, dOutput: dNormalized, output: a.normalizedBottleneck.pointer + first * bottleneck,
                             norms: a.bottleneckNorms.pointer + first, rows: m, columns: bottleneck)
        var dOutput = UnsafePointer(dBottleneck)
        for i in stride(from: linears.count - 1, through: 0, by: -1) {
            let layer = linears[i]
            let input = i == 0 ? UnsafePointer(a.input.pointer + first * layer.input)
                               : UnsafePointer(a.postActivations[i - 1].pointer + first * layer.input)
            let dIn = i == 0 ? dInput + first * layer.input : (i % 2 == 1 ? scratch.hiddenA : scratch.hiddenB).pointer + first * layer.input
            Linear.backward(dInput: dIn, dWeight: g + layer.weight, dBias: g + layer.bias, dOutput: dOutput,
                            input: input, weight: p + layer.weight, rows: m, inputSize: layer.input, outputSize: layer.output,
                            overwriteInput: i > 0,
                            geluInput: i > 0 ? UnsafePointer(a.preActivations[i - 1].pointer + first * layer.input) : nil)
            if i > 0 { dOutput = UnsafePointer(dIn) }
        }
    }
}
