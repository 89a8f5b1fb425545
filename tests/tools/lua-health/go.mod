// lua-health: runs an Argo CD health check in gopher-lua, the interpreter Argo CD embeds.
module imaging-tenant-operator/tests/tools/lua-health

go 1.26.0

require github.com/yuin/gopher-lua v1.1.2
