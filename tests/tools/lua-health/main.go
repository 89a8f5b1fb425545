// Command lua-health runs an Argo CD resource health check (a Lua script) on one object, in
// gopher-lua, the interpreter Argo CD embeds, set up the way Argo CD sets it up: the object as
// the global `obj`, only the package, base and table libraries open (no string, os or io), and
// a one-second limit. It prints what the script returned as JSON, {"status": ..., "message": ...},
// with a status outside Argo CD's set reported as Unknown, as Argo CD does.
//
//	lua-health SCRIPT.lua [OBJECT.json]    (the object from stdin when no file is given)
//
// Exit status: 0 with a health, 1 when the script fails or returns no table, 2 on bad usage
// or input.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Health is what Argo CD reads from the table a health script returns.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: lua-health SCRIPT.lua [OBJECT.json]")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(2, "read the script: %v", err)
	}
	var input io.Reader = os.Stdin
	if len(os.Args) == 3 {
		file, err := os.Open(os.Args[2])
		if err != nil {
			fail(2, "read the object: %v", err)
		}
		defer file.Close()
		input = file
	}
	object, err := readObject(input)
	if err != nil {
		fail(2, "the object is not a JSON object: %v", err)
	}
	health, err := evaluate(string(script), object)
	if err != nil {
		fail(1, "%v", err)
	}
	out, _ := json.Marshal(health)
	fmt.Println(string(out))
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lua-health: "+format+"\n", args...)
	os.Exit(code)
}

// readObject decodes one JSON object with integers as int64, as Kubernetes' unstructured
// objects hold them.
func readObject(r io.Reader) (map[string]any, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var object map[string]any
	if err := decoder.Decode(&object); err != nil {
		return nil, err
	}
	if object == nil {
		return nil, fmt.Errorf("null")
	}
	return integers(object).(map[string]any), nil
}

func integers(value any) any {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = integers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = integers(v[k])
		}
	}
	return value
}

func evaluate(script string, object map[string]any) (*Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("open %s: %v", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(script); err != nil {
		return nil, fmt.Errorf("the script failed: %v", err)
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	health := &Health{}
	for field, target := range map[string]*string{"status": &health.Status, "message": &health.Message} {
		switch value := table.RawGetString(field).(type) {
		case lua.LString:
			*target = string(value)
		case *lua.LNilType:
		default:
			return nil, fmt.Errorf("%s is a %s, not a string", field, value.Type())
		}
	}
	if !validStatuses[health.Status] {
		return &Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return health, nil
}

// toLua converts a decoded JSON value the way Argo CD hands objects to health scripts.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}
