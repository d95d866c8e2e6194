"""Programs the language tests share: a sum of n numbers on stdin in every language, and a
compile error in each built language with what its compiler says."""

from __future__ import annotations

# stdin "n\nx1 x2 ... xn\n" -> the sum, by rewards' canonical language names.
SUM_PROGRAMS = {
    "c": "#include <stdio.h>\nint main(void){int n; long s=0,x; scanf(\"%d\",&n); while(n--){scanf(\"%ld\",&x); s+=x;}"
         " printf(\"%ld\\n\", s); return 0;}",
    "cpp": "#include <bits/stdc++.h>\nint main(){int n; long long s=0,x; std::cin>>n; while(n--){std::cin>>x; s+=x;}"
           " std::cout<<s<<\"\\n\";}",
    "java": "import java.util.*;\n// class Decoy { }\npublic class Sum { public static void main(String[] a){"
            " Scanner sc=new Scanner(System.in); int n=sc.nextInt(); long s=0; for(int i=0;i<n;i++) s+=sc.nextLong();"
            " System.out.println(s);} }",
    "javascript": "const d=require('fs').readFileSync(0,'utf8').trim().split(/\\s+/).map(Number); let s=0;"
                  " for(let i=1;i<=d[0];i++) s+=d[i]; console.log(s);",
    "go": "package main\nimport \"fmt\"\nfunc main(){ var n int; fmt.Scan(&n); s:=0;"
          " for i:=0;i<n;i++ { var x int; fmt.Scan(&x); s+=x }; fmt.Println(s) }",
    "rust": "use std::io::*;\nfn main(){ let mut t=String::new(); stdin().read_to_string(&mut t).unwrap();"
            " let v:Vec<i64>=t.split_whitespace().map(|x|x.parse().unwrap()).collect();"
            " let s:i64=v[1..].iter().sum(); println!(\"{}\", s); }",
    "bash": "read n; read -a xs; s=0; for x in \"${xs[@]}\"; do s=$((s+x)); done; echo $s",
    "python": "n=int(input()); print(sum(map(int,input().split())))",
}

# (language, source, what the compiler's message contains)
COMPILE_ERRORS = [
    ("c", "int main(void) { return undefined_name; }", "undefined_name"),
    ("cpp", "int main() { std::vector<int> v; }", "vector"),
    ("java", "public class Main { public static void main(String[] a) { int x = \"s\"; } }", "incompatible types"),
    ("go", "package main\nfunc main() { x := 1 }", "declared but not used"),
    ("rust", "fn main() { let x: i32 = \"a\"; }", "mismatched types"),
]
