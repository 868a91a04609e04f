// Command crdcost judges CustomResourceDefinition files the way a Kubernetes API server does when they are
// created: it runs the API server's own CRD validation (k8s.io/apiextensions-apiserver), which compiles every
// x-kubernetes-validations rule and estimates its worst-case cost with the CEL cost model of Kubernetes
// (per-rule limit and per-CRD total, from the maxLength/maxItems/maxProperties bounds around each rule).
// It prints every error the API server would answer (a rule over its cost budget names the rule and the factor),
// and exits 1 when the API server would refuse a file.
//
// Usage: crdcost FILE...
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdcost FILE...")
		os.Exit(2)
	}
	refused := false
	for _, path := range os.Args[1:] {
		ok, err := judge(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(2)
		}
		refused = refused || !ok
	}
	if refused {
		os.Exit(1)
	}
}

func judge(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	scheme := runtime.NewScheme()
	if err := apiextensions.AddToScheme(scheme); err != nil {
		return false, err
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return false, err
	}
	var v1 apiextensionsv1.CustomResourceDefinition
	if _, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode(data, nil, &v1); err != nil {
		return false, fmt.Errorf("decoding: %w", err)
	}
	// What the API server does before validating: defaults, then the internal version.
	scheme.Default(&v1)
	var crd apiextensions.CustomResourceDefinition
	if err := scheme.Convert(&v1, &crd, nil); err != nil {
		return false, fmt.Errorf("converting: %w", err)
	}
	errs := validation.ValidateCustomResourceDefinition(context.Background(), &crd)
	for _, e := range errs {
		fmt.Printf("%s: REFUSED %s\n", path, e.Error())
	}
	if len(errs) == 0 {
		fmt.Printf("%s: accepted\n", path)
	}
	return len(errs) == 0, nil
}
