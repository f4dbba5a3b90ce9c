// Command check validates the Clove Terraform module without terraform (which is not installed on our
// machines, and whose providers cannot be downloaded here): it parses every .tf file with HashiCorp's own
// HCL parser and reads the module with terraform-config-inspect, then checks what `terraform validate`
// would catch first in a module like ours:
//
//   - every file parses (HCL diagnostics, with file:line:col);
//   - every reference resolves: var.X to a variable, local.X to a local, data.T.N / T.N to a data source
//     or resource of the module, module.X to a module call;
//   - every variable without a default has a description, and every variable is used;
//   - every output refers to something of the module;
//   - file() and templatefile() name files that exist, and a templatefile()'s template uses only the
//     variables it is given (so a shell "${VAR}" that should have been "$${VAR}" is caught);
//   - a cloud-init template (#cloud-config) renders — file() arguments read for real, the others as
//     placeholders — into YAML that parses, a mapping with write_files entries that each have a path
//     and content.
//
// Usage: go run . [MODULE_DIR]   (default: the parent folder, deploy/terraform). Exit 1 on any problem.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/terraform-config-inspect/tfconfig"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"gopkg.in/yaml.v3"
)

// problem is one finding, printed as file:line:col: message.
type problem struct {
	rng hcl.Range
	msg string
}

// module is what the references are checked against.
type module struct {
	dir       string
	variables map[string]*tfconfig.Variable
	locals    map[string]bool
	resources map[string]bool // "aws_instance.kernel"
	data      map[string]bool // "data.aws_ami.debian"
	modules   map[string]bool
	used      map[string]bool // variables referenced somewhere
	problems  []problem
}

func main() {
	dir := ".."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	probs, err := check(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "check: %v\n", err)
		os.Exit(2)
	}
	sort.Slice(probs, func(i, j int) bool {
		a, b := probs[i].rng, probs[j].rng
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Start.Line < b.Start.Line
	})
	for _, p := range probs {
		if p.rng.Filename == "" {
			fmt.Printf("%s: %s\n", dir, p.msg)
		} else {
			fmt.Printf("%s:%d:%d: %s\n", p.rng.Filename, p.rng.Start.Line, p.rng.Start.Column, p.msg)
		}
	}
	if len(probs) > 0 {
		fmt.Printf("check: %d problem(s) in %s\n", len(probs), dir)
		os.Exit(1)
	}
	fmt.Printf("check: ok: %s\n", dir)
}

// check runs every check on the module in dir; the error is for a module that cannot be read at all.
func check(dir string) ([]problem, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .tf files in %s", dir)
	}
	m := &module{
		dir:       dir,
		locals:    map[string]bool{},
		resources: map[string]bool{},
		data:      map[string]bool{},
		modules:   map[string]bool{},
		used:      map[string]bool{},
	}

	// Parse with HCL itself: syntax errors with their exact positions.
	parser := hclparse.NewParser()
	var bodies []*hclsyntax.Body
	for _, f := range files {
		file, diags := parser.ParseHCLFile(f)
		m.addDiags(diags)
		if file != nil {
			if body, ok := file.Body.(*hclsyntax.Body); ok {
				bodies = append(bodies, body)
			}
		}
	}

	// The module as Terraform sees it: variables, outputs, resources, data sources, module calls.
	mod, diags := tfconfig.LoadModule(dir)
	for _, d := range diags {
		r := hcl.Range{}
		if d.Pos != nil {
			r = hcl.Range{Filename: d.Pos.Filename, Start: hcl.Pos{Line: d.Pos.Line, Column: 1}}
		}
		m.problems = append(m.problems, problem{r, fmt.Sprintf("%s: %s", d.Summary, d.Detail)})
	}
	m.variables = mod.Variables
	for k := range mod.ManagedResources {
		m.resources[k] = true
	}
	for k := range mod.DataResources {
		m.data[k] = true
	}
	for k := range mod.ModuleCalls {
		m.modules[k] = true
	}
	for _, b := range bodies {
		for _, blk := range b.Blocks {
			if blk.Type == "locals" {
				for name := range blk.Body.Attributes {
					m.locals[name] = true
				}
			}
		}
	}

	for _, b := range bodies {
		for _, blk := range b.Blocks {
			m.checkTopBlock(blk)
		}
	}

	for name, v := range mod.Variables {
		r := hcl.Range{Filename: v.Pos.Filename, Start: hcl.Pos{Line: v.Pos.Line, Column: 1}}
		if v.Required && strings.TrimSpace(v.Description) == "" {
			m.problems = append(m.problems, problem{r, fmt.Sprintf("variable %q has no default and no description", name)})
		}
		if !m.used[name] {
			m.problems = append(m.problems, problem{r, fmt.Sprintf("variable %q is declared but never used", name)})
		}
	}
	if len(mod.Outputs) == 0 {
		m.problems = append(m.problems, problem{hcl.Range{}, "the module has no outputs"})
	}
	return m.problems, nil
}

func (m *module) addDiags(diags hcl.Diagnostics) {
	for _, d := range diags {
		r := hcl.Range{}
		if d.Subject != nil {
			r = *d.Subject
		}
		m.problems = append(m.problems, problem{r, fmt.Sprintf("%s: %s", d.Summary, d.Detail)})
	}
}

// checkTopBlock checks the references of one top-level block (resource, output, locals, …).
func (m *module) checkTopBlock(blk *hclsyntax.Block) {
	switch blk.Type {
	case "terraform", "moved", "import", "removed", "check":
		return // constraints and refactoring blocks: no module references to check here
	case "variable":
		// `type` is a type expression (string, list(object({…}))), not references; the rest may refer to var.
		for name, attr := range blk.Body.Attributes {
			if name != "type" {
				m.checkExpr(attr.Expr, nil)
			}
		}
		for _, inner := range blk.Body.Blocks {
			m.checkBody(inner.Body, nil)
		}
		return
	case "output":
		value, ok := blk.Body.Attributes["value"]
		if !ok {
			m.problems = append(m.problems, problem{blk.Range(), fmt.Sprintf("output %q has no value", strings.Join(blk.Labels, "."))})
		} else if len(value.Expr.Variables()) == 0 {
			m.problems = append(m.problems, problem{value.Range(), fmt.Sprintf("output %q refers to nothing of the module", strings.Join(blk.Labels, "."))})
		}
	}
	m.checkBody(blk.Body, nil)
}

// checkBody checks every attribute and nested block; iterators are the names dynamic blocks introduce.
func (m *module) checkBody(body *hclsyntax.Body, iterators map[string]bool) {
	for name, attr := range body.Attributes {
		switch name {
		case "provider", "ignore_changes":
			continue // a provider address, attribute names: not references
		}
		m.checkExpr(attr.Expr, iterators)
	}
	for _, blk := range body.Blocks {
		inner := iterators
		if blk.Type == "dynamic" && len(blk.Labels) == 1 {
			inner = map[string]bool{blk.Labels[0]: true}
			for k := range iterators {
				inner[k] = true
			}
			if it, ok := blk.Body.Attributes["iterator"]; ok {
				if tr, diags := hcl.AbsTraversalForExpr(it.Expr); !diags.HasErrors() {
					inner[tr.RootName()] = true
				}
			}
		}
		m.checkBody(blk.Body, inner)
	}
}

// checkExpr resolves every reference in an expression and checks the files it reads.
func (m *module) checkExpr(expr hclsyntax.Expression, iterators map[string]bool) {
	for _, tr := range expr.Variables() {
		m.checkTraversal(tr, iterators)
	}
	hclsyntax.VisitAll(expr, func(n hclsyntax.Node) hcl.Diagnostics {
		if call, ok := n.(*hclsyntax.FunctionCallExpr); ok {
			m.checkFileCall(call)
		}
		return nil
	})
}

// attrName is the name of the step after the root (var.NAME), or "" when it is not an attribute step.
func attrName(tr hcl.Traversal, i int) string {
	if len(tr) <= i {
		return ""
	}
	if a, ok := tr[i].(hcl.TraverseAttr); ok {
		return a.Name
	}
	return ""
}

func (m *module) checkTraversal(tr hcl.Traversal, iterators map[string]bool) {
	root := tr.RootName()
	rng := tr.SourceRange()
	bad := func(format string, args ...any) {
		m.problems = append(m.problems, problem{rng, fmt.Sprintf(format, args...)})
	}
	switch root {
	case "var":
		name := attrName(tr, 1)
		if _, ok := m.variables[name]; !ok {
			bad("reference to undeclared variable var.%s", name)
		}
		m.used[name] = true
	case "local":
		if name := attrName(tr, 1); !m.locals[name] {
			bad("reference to undeclared local value local.%s", name)
		}
	case "data":
		key := fmt.Sprintf("data.%s.%s", attrName(tr, 1), attrName(tr, 2))
		if !m.data[key] {
			bad("reference to undeclared data source %s", key)
		}
	case "module":
		if name := attrName(tr, 1); !m.modules[name] {
			bad("reference to undeclared module module.%s", name)
		}
	case "path":
		switch attrName(tr, 1) {
		case "module", "root", "cwd":
		default:
			bad("unknown path attribute path.%s", attrName(tr, 1))
		}
	case "terraform", "count", "each", "self":
	default:
		if iterators[root] {
			return
		}
		key := fmt.Sprintf("%s.%s", root, attrName(tr, 1))
		if !m.resources[key] {
			bad("reference to undeclared resource %s", key)
		}
	}
}

// checkFileCall checks file("${path.module}/x") and templatefile("${path.module}/x", {…}): the file
// exists, and the template refers only to the keys of the object it is given.
func (m *module) checkFileCall(call *hclsyntax.FunctionCallExpr) {
	switch call.Name {
	case "file", "templatefile", "filebase64", "filesha256":
	default:
		return
	}
	if len(call.Args) == 0 {
		return
	}
	rel, ok := modulePath(call.Args[0])
	if !ok {
		return // a path computed at plan time: nothing to check here
	}
	path := filepath.Join(m.dir, rel)
	src, err := os.ReadFile(path)
	if err != nil {
		m.problems = append(m.problems, problem{call.Args[0].Range(), fmt.Sprintf("%s(): cannot read %s: %v", call.Name, rel, err)})
		return
	}
	if call.Name != "templatefile" || len(call.Args) < 2 {
		return
	}
	obj, ok := call.Args[1].(*hclsyntax.ObjectConsExpr)
	if !ok {
		return
	}
	given := map[string]bool{}
	for _, item := range obj.Items {
		if key, diags := item.KeyExpr.Value(nil); !diags.HasErrors() && key.Type() == cty.String {
			given[key.AsString()] = true
		}
	}
	tmpl, diags := hclsyntax.ParseTemplate(src, path, hcl.Pos{Line: 1, Column: 1, Byte: 0})
	m.addDiags(diags)
	if tmpl == nil {
		return
	}
	seen := map[string]bool{}
	for _, tr := range tmpl.Variables() {
		name := tr.RootName()
		if !given[name] && !seen[name] {
			seen[name] = true
			m.problems = append(m.problems, problem{tr.SourceRange(), fmt.Sprintf("template %s uses %q, which templatefile() does not pass (a shell variable must be written $${%s})", rel, name, name)})
		}
	}
	if strings.HasPrefix(string(src), "#cloud-config") {
		m.checkCloudInit(call, rel, tmpl, obj)
	}
	for name := range given {
		used := false
		for _, tr := range tmpl.Variables() {
			if tr.RootName() == name {
				used = true
			}
		}
		if !used {
			m.problems = append(m.problems, problem{call.Args[1].Range(), fmt.Sprintf("templatefile(%s) passes %q, which the template never uses", rel, name)})
		}
	}
}

// modulePath turns "${path.module}/a/b" (or a plain literal) into "a/b"; false for anything computed.
func modulePath(expr hclsyntax.Expression) (string, bool) {
	tmpl, ok := expr.(*hclsyntax.TemplateExpr)
	if !ok {
		return "", false
	}
	var b strings.Builder
	for i, part := range tmpl.Parts {
		switch p := part.(type) {
		case *hclsyntax.LiteralValueExpr:
			if p.Val.Type() != cty.String {
				return "", false
			}
			b.WriteString(p.Val.AsString())
		case *hclsyntax.ScopeTraversalExpr:
			if i != 0 || p.Traversal.RootName() != "path" || attrName(p.Traversal, 1) != "module" {
				return "", false
			}
		default:
			return "", false
		}
	}
	return strings.TrimPrefix(b.String(), "/"), true
}

// checkCloudInit renders a cloud-init template the way templatefile() would — arguments that are file()
// calls with their files' contents, every other argument as the string "placeholder-<name>" — and checks
// the result is what cloud-init reads: YAML, a mapping, and write_files entries with a path and content.
func (m *module) checkCloudInit(call *hclsyntax.FunctionCallExpr, rel string, tmpl hclsyntax.Expression, obj *hclsyntax.ObjectConsExpr) {
	bad := func(format string, args ...any) {
		m.problems = append(m.problems, problem{call.Range(), fmt.Sprintf("cloud-init %s: ", rel) + fmt.Sprintf(format, args...)})
	}
	vars := map[string]cty.Value{}
	for _, item := range obj.Items {
		key, diags := item.KeyExpr.Value(nil)
		if diags.HasErrors() || key.Type() != cty.String {
			continue
		}
		name := key.AsString()
		vars[name] = cty.StringVal("placeholder-" + name)
		if fc, ok := item.ValueExpr.(*hclsyntax.FunctionCallExpr); ok && fc.Name == "file" && len(fc.Args) == 1 {
			if p, ok := modulePath(fc.Args[0]); ok {
				if b, err := os.ReadFile(filepath.Join(m.dir, p)); err == nil {
					vars[name] = cty.StringVal(string(b))
				}
			}
		}
	}
	ctx := &hcl.EvalContext{
		Variables: vars,
		Functions: map[string]function.Function{
			"jsonencode": stdlib.JSONEncodeFunc,
			"upper":      stdlib.UpperFunc,
			"lower":      stdlib.LowerFunc,
			"join":       stdlib.JoinFunc,
			"trimspace":  stdlib.TrimSpaceFunc,
		},
	}
	out, diags := tmpl.Value(ctx)
	if diags.HasErrors() {
		bad("does not render: %s", diags.Error())
		return
	}
	if !out.Type().Equals(cty.String) || !out.IsKnown() {
		bad("does not render to a string")
		return
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(out.AsString()), &doc); err != nil {
		bad("rendered, it is not YAML: %v", err)
		return
	}
	if doc == nil {
		bad("rendered, it is empty")
		return
	}
	files, _ := doc["write_files"].([]any)
	for i, f := range files {
		entry, ok := f.(map[string]any)
		if !ok {
			bad("write_files[%d] is not a mapping", i)
			continue
		}
		if p, _ := entry["path"].(string); !strings.HasPrefix(p, "/") {
			bad("write_files[%d] has no absolute path", i)
		}
		if c, _ := entry["content"].(string); c == "" {
			bad("write_files[%d] (%v) has no content", i, entry["path"])
		}
	}
}
