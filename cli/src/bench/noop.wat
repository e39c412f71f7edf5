;; Does nothing and succeeds: measures the fixed cost of a sandboxed run.
(module
  (memory (export "memory") 1)
  (func (export "_start")))
