module github.com/crx580/crx580/examples/go

go 1.19

require github.com/crx580/crx580/bindings/go v0.0.0

replace github.com/crx580/crx580/bindings/go => ../../bindings/go
