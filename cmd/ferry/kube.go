package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// kubeFlags are the flags of the release manager's commands besides the global ones.
type kubeFlags struct {
	namespace string
}

func (k *kubeFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&k.namespace, "namespace", "n", "", "the namespace (default: the kubeconfig context's namespace, else \"default\")")
}

// client returns a client for the cluster Ferry runs on and the namespace to work in: -n, else
// the kubeconfig context's namespace, else "default" — as kubectl does.
func (k *kubeFlags) client(g *globalFlags) (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", err
	}
	ns := k.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", err
		}
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ferryv1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("failed to create a client: %w", err)
	}
	return c, ns, nil
}

// printObject writes obj as JSON or YAML, kubectl style (with apiVersion and kind, without
// managedFields).
func printObject(w io.Writer, format string, obj runtime.Object) error {
	var data []byte
	var err error
	switch format {
	case "json":
		data, err = json.MarshalIndent(obj, "", "    ")
		data = append(data, '\n')
	case "yaml":
		data, err = yaml.Marshal(obj)
	default:
		return fmt.Errorf("unknown output format %q: use json or yaml (or nothing for a table)", format)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// tidy sets an object's apiVersion and kind and drops managedFields, for printing.
func tidy(obj client.Object, kind string) {
	obj.GetObjectKind().SetGroupVersionKind(ferryv1.GroupVersion.WithKind(kind))
	obj.SetManagedFields(nil)
}

// age is how long ago t was, as kubectl prints it.
func age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}

// readyOf returns the status and reason of a Ready condition, "Unknown" when there is none.
func readyOf(conds []metav1.Condition) (string, string) {
	c := meta.FindStatusCondition(conds, ferryv1.ReadyCondition)
	if c == nil {
		return "Unknown", ""
	}
	return string(c.Status), c.Reason
}

// shortDigest shortens repository@sha256:<digest> to its first 12 hex digits.
func shortDigest(image string) string {
	_, digest, ok := strings.Cut(image, "@sha256:")
	if !ok || len(digest) < 12 {
		return image
	}
	return "sha256:" + digest[:12]
}

// orNone prints "<none>" for an empty cell, as kubectl does.
func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
