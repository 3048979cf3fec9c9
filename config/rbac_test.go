package config_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/ferryci/ferry/internal/controlplane"
)

// installed is what `kubectl kustomize config/default` renders, by kind.
type installed struct {
	clusterRoles        map[string]*rbacv1.ClusterRole
	roles               map[string]*rbacv1.Role
	clusterRoleBindings []*rbacv1.ClusterRoleBinding
	roleBindings        []*rbacv1.RoleBinding
	serviceAccounts     map[string]bool
	deployments         map[string]*appsv1.Deployment
	secrets             map[string]bool
	webhookConfigs      map[string]string
}

// render renders config/default and sorts what it holds by kind.
func render(t *testing.T) *installed {
	t.Helper()
	return renderDir(t, "default")
}

// renderDir renders a kustomization of config/ and sorts what it holds by kind.
func renderDir(t *testing.T, dir string) *installed {
	t.Helper()
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/%s: %v", dir, stderr(err))
	}
	in := &installed{
		clusterRoles: map[string]*rbacv1.ClusterRole{}, roles: map[string]*rbacv1.Role{},
		serviceAccounts: map[string]bool{}, deployments: map[string]*appsv1.Deployment{}, secrets: map[string]bool{}, webhookConfigs: map[string]string{},
	}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		head := &struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
		}{}
		if err := yaml.Unmarshal(doc, head); err != nil {
			t.Fatal(err)
		}
		key := head.Namespace + "/" + head.Name
		var obj any
		switch head.Kind {
		case "ClusterRole":
			r := &rbacv1.ClusterRole{}
			in.clusterRoles[head.Name], obj = r, r
		case "Role":
			r := &rbacv1.Role{}
			in.roles[key], obj = r, r
		case "ClusterRoleBinding":
			b := &rbacv1.ClusterRoleBinding{}
			in.clusterRoleBindings, obj = append(in.clusterRoleBindings, b), b
		case "RoleBinding":
			b := &rbacv1.RoleBinding{}
			in.roleBindings, obj = append(in.roleBindings, b), b
		case "ServiceAccount":
			in.serviceAccounts[key] = true
		case "Secret":
			in.secrets[key] = true
		case "Deployment":
			d := &appsv1.Deployment{}
			in.deployments[key], obj = d, d
		case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
			in.webhookConfigs[head.Name] = strings.ToLower(head.Kind) + "s"
		}
		if obj != nil {
			if err := yaml.Unmarshal(doc, obj); err != nil {
				t.Fatalf("%s %s: %v", head.Kind, key, err)
			}
		}
	}
	return in
}

// rulesOf are the rules the install grants a ServiceAccount, each with where it applies.
func (in *installed) rulesOf(namespace, name string) map[string][]rbacv1.PolicyRule {
	rules := map[string][]rbacv1.PolicyRule{}
	isSubject := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Namespace == namespace && s.Name == name
		})
	}
	for _, b := range in.clusterRoleBindings {
		if isSubject(b.Subjects) && b.RoleRef.Kind == "ClusterRole" && in.clusterRoles[b.RoleRef.Name] != nil {
			rules["cluster-wide, ClusterRole "+b.RoleRef.Name] = in.clusterRoles[b.RoleRef.Name].Rules
		}
	}
	for _, b := range in.roleBindings {
		if !isSubject(b.Subjects) {
			continue
		}
		where := "namespace " + b.Namespace + ", " + b.RoleRef.Kind + " " + b.RoleRef.Name
		switch b.RoleRef.Kind {
		case "ClusterRole":
			if r := in.clusterRoles[b.RoleRef.Name]; r != nil {
				rules[where] = r.Rules
			}
		case "Role":
			if r := in.roles[b.Namespace+"/"+b.RoleRef.Name]; r != nil {
				rules[where] = r.Rules
			}
		}
	}
	return rules
}

func grants(r rbacv1.PolicyRule, group, resource, verb string) bool {
	return (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
		(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
		(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*"))
}

// TestInstalledRBACIsLeastPrivilege: what config/default installs lets neither the manager nor
// the UI impersonate anyone (system:masters included) or touch webhook configurations other than
// Ferry's own, by name; the UI runs as a ServiceAccount of its own that reads no Secret but its
// own, by name; the manager's webhooks believe the person the UI names from that ServiceAccount
// alone. No role Ferry installs may impersonate, escalate or bind.
func TestInstalledRBACIsLeastPrivilege(t *testing.T) {
	in := render(t)
	const ns = "ferry-system"
	for name, r := range in.clusterRoles {
		checkNoDangerousVerb(t, "ClusterRole "+name, r.Rules)
	}
	for name, r := range in.roles {
		checkNoDangerousVerb(t, "Role "+name, r.Rules)
	}

	manager, ui := in.deployments[ns+"/ferry-manager"], in.deployments[ns+"/ferry-ui"]
	if manager == nil || ui == nil {
		t.Fatalf("config/default installs no Deployment ferry-manager or ferry-ui in %s", ns)
	}
	managerSA, uiSA := manager.Spec.Template.Spec.ServiceAccountName, ui.Spec.Template.Spec.ServiceAccountName
	if managerSA == "" || managerSA == uiSA || !in.serviceAccounts[ns+"/"+uiSA] {
		t.Fatalf("the manager runs as ServiceAccount %q and the UI as %q: want two identities, both installed", managerSA, uiSA)
	}
	if args := ui.Spec.Template.Spec.Containers[0].Args; len(args) == 0 || args[0] != "ui" {
		t.Errorf("the UI's Deployment runs %v, want ferry ui", args)
	}
	wantIdentity := fmt.Sprintf("--ui-identity=system:serviceaccount:%s:%s", ns, uiSA)
	if args := manager.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, wantIdentity) || !slices.Contains(args, "--ui-bind-address=0") {
		t.Errorf("the manager's args %v lack %s and --ui-bind-address=0: its webhooks would not know the UI's identity, or it would serve a UI with its own", args, wantIdentity)
	}

	for who, sa := range map[string]string{"manager": managerSA, "UI": uiSA} {
		rules := in.rulesOf(ns, sa)
		if len(rules) == 0 {
			t.Errorf("the %s's ServiceAccount %s is bound to no role", who, sa)
		}
		for where, rs := range rules {
			for _, r := range rs {
				for _, res := range []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"} {
					if !slices.Contains(r.Resources, res) {
						continue
					}
					if len(r.ResourceNames) == 0 || slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "patch" }) {
						t.Errorf("the %s (%s) may %v %s named %v: want get and patch of Ferry's own, by name", who, where, r.Verbs, res, r.ResourceNames)
					}
					for _, n := range r.ResourceNames {
						if in.webhookConfigs[n] != res {
							t.Errorf("the %s (%s) may patch %s %s, which is not one of Ferry's", who, where, res, n)
						}
					}
				}
			}
		}
	}
	for where, rs := range in.rulesOf(ns, uiSA) {
		for _, r := range rs {
			if grants(r, "", "secrets", "get") || grants(r, "", "secrets", "list") || grants(r, "", "secrets", "update") {
				if len(r.ResourceNames) == 0 || !strings.HasPrefix(where, "namespace "+ns) {
					t.Errorf("the UI (%s) may %v Secrets %v: want only its own, by name, in %s", where, r.Verbs, r.ResourceNames, ns)
				}
			}
			if grants(r, "", "secrets", "create") {
				t.Errorf("the UI (%s) may create Secrets: the install creates its session Secret", where)
			}
		}
	}
	if !in.secrets[ns+"/ferry-ui-session"] {
		t.Error("config/default does not create the UI's session Secret ferry-ui-session, which the UI may not create")
	}
	// The role that reads GitLab tokens is installed unbound: it is bound per namespace.
	for _, b := range in.clusterRoleBindings {
		if b.RoleRef.Name == "ferry-ui-gitlab-token-reader" {
			t.Errorf("ClusterRoleBinding %s binds ferry-ui-gitlab-token-reader in every namespace, where ferry-system's kubeconfigs are", b.Name)
		}
	}
}

// checkNoDangerousVerb refuses rules that let their holder become someone else or grant itself more.
func checkNoDangerousVerb(t *testing.T, role string, rules []rbacv1.PolicyRule) {
	t.Helper()
	for _, r := range rules {
		for _, v := range r.Verbs {
			switch v {
			case "impersonate", "escalate", "bind", "*":
				t.Errorf("%s may %s %v (API groups %v)", role, v, r.Resources, r.APIGroups)
			}
		}
		if slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
			t.Errorf("%s has a rule on every resource or API group: %+v", role, r)
		}
	}
}

// TestMemberRBACIsLeastPrivilege: the account config/member makes on a target cluster may do what
// rollouts, previews and verification do there (TestRealNodeVerification runs them with it) and
// nothing that reads the cluster's Secrets wholesale, runs commands in pods, reaches nodes or
// grants itself more.
func TestMemberRBACIsLeastPrivilege(t *testing.T) {
	in := renderDir(t, "member")
	rules := in.rulesOf("ferry-system", "ferry-member")
	if len(rules) != 1 {
		t.Fatalf("ferry-system/ferry-member is bound to %d roles (%v), want config/member's ClusterRole", len(rules), rules)
	}
	for where, rs := range rules {
		checkNoDangerousVerb(t, where, rs)
		for _, r := range rs {
			if slices.Contains(r.APIGroups, rbacv1.GroupName) {
				t.Errorf("%s has a rule on RBAC: %+v", where, r)
			}
		}
		for _, deny := range []struct{ group, resource, verb string }{
			{"", "secrets", "list"}, {"", "secrets", "watch"},
			{"", "pods/exec", "create"}, {"", "pods/attach", "create"}, {"", "pods/portforward", "create"},
			{"", "pods", "create"}, {"", "nodes", "get"}, {"", "nodes/proxy", "get"},
			{"", "serviceaccounts/token", "create"}, {"", "persistentvolumes", "create"},
		} {
			for _, r := range rs {
				if grants(r, deny.group, deny.resource, deny.verb) {
					t.Errorf("%s may %s %s", where, deny.verb, deny.resource)
				}
			}
		}
		for _, need := range []struct{ group, resource, verb string }{
			{"", "namespaces", "create"}, {"apps", "deployments", "patch"}, {"", "services/proxy", "get"},
			{"batch", "jobs", "create"}, {"", "pods/log", "get"},
		} {
			if !slices.ContainsFunc(rs, func(r rbacv1.PolicyRule) bool { return grants(r, need.group, need.resource, need.verb) }) {
				t.Errorf("%s may not %s %s, which rollouts and verification do", where, need.verb, need.resource)
			}
		}
	}
}
