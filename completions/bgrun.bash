# bash completion for bgrun(1): options, playbook files, then the
# playbook's parameters (name=) and their choices, read at completion time
# from `bgrun --describe --json PLAYBOOK` (its format is stable, see
# bgrun(1)). Install: make install (into
# $(PREFIX)/share/bash-completion/completions/bgrun), or source this file.

# Prints one line per parameter: NAME<TAB>TYPE<TAB>CHOICE CHOICE ...,
# from the indented JSON `bgrun --describe --json` prints.
_bgrun_params()
{
	"$1" --describe --json -- "$2" 2>/dev/null | awk '
		/^    \{/ { name = ""; type = ""; ch = ""; inch = 0; next }
		inch && /^      \]/ { inch = 0; next }
		inch { v = $0; sub(/^ +/, "", v); sub(/,$/, "", v); gsub(/^"|"$/, "", v); ch = ch (ch == "" ? "" : " ") v; next }
		/^      "choices": \[/ { inch = 1; next }
		/^      "name": / { v = $0; sub(/^      "name": "/, "", v); sub(/",?$/, "", v); name = v; next }
		/^      "type": / { v = $0; sub(/^      "type": "/, "", v); sub(/",?$/, "", v); type = v; next }
		/^    \}/ { if (type == "boolean" && ch == "") ch = "true false"; if (name != "") printf "%s\t%s\t%s\n", name, type, ch }
	'
}

_bgrun()
{
	local line=${COMP_LINE:0:COMP_POINT}
	local cur=""
	# the word being completed, '=' included whatever COMP_WORDBREAKS says
	[[ $line =~ [^[:space:]]*$ ]] && cur=${BASH_REMATCH[0]}
	local -a words
	read -r -a words <<<"${line% "$cur"}"
	local prog=${COMP_WORDS[0]} playbook="" ended=0 skip=0 i w given=" "
	for ((i = 1; i < ${#words[@]}; i++)); do
		w=${words[i]}
		if ((skip)); then skip=0; continue; fi
		if ((!ended)); then
			case $w in
			--) ended=1; continue ;;
			--log-format | --report) skip=1; continue ;;
			-*) continue ;;
			esac
		fi
		if [[ -z $playbook ]]; then
			playbook=$w
		elif [[ $w == *=* ]]; then
			given+="${w%%=*} "
		fi
	done
	COMPREPLY=()
	case ${words[${#words[@]} - 1]} in
	--log-format)
		((skip)) && { COMPREPLY=($(compgen -W "text json" -- "$cur")); return; } ;;
	--report)
		((skip)) && { COMPREPLY=($(compgen -f -- "$cur")); return; } ;;
	esac
	if ((!ended)) && [[ $cur == --log-format=* ]]; then
		local -a vals=($(compgen -W "text json" -- "${cur#--log-format=}"))
		if [[ $COMP_WORDBREAKS == *=* ]]; then COMPREPLY=("${vals[@]}"); else COMPREPLY=("${vals[@]/#/--log-format=}"); fi
		return
	fi
	if ((!ended)) && [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "--dry-run --yes --log-format --verbose --quiet --report --describe --json --force --help --version" -- "$cur"))
		return
	fi
	if [[ -z $playbook ]]; then
		local IFS=$'\n'
		COMPREPLY=($(compgen -W $'resume\ntest' -- "$cur") $(compgen -d -S / -- "$cur") $(compgen -f -X '!*.lua' -- "$cur"))
		compopt -o nospace -o filenames 2>/dev/null
		# a directory goes on; a playbook ends with a space
		if ((${#COMPREPLY[@]} == 1)) && [[ ${COMPREPLY[0]} != */ ]]; then compopt +o nospace 2>/dev/null; fi
		return
	fi
	case $playbook in
	resume | test | keep-lock) [[ $playbook == resume ]] && COMPREPLY=($(compgen -f -- "$cur")); return ;;
	esac
	local name type choices
	if [[ $cur == *=* ]]; then
		local want=${cur%%=*} value=${cur#*=}
		while IFS=$'\t' read -r name type choices; do
			[[ $name == "$want" ]] || continue
			local -a vals=($(compgen -W "$choices" -- "$value"))
			# bash splits the word at '=' when COMP_WORDBREAKS has it
			if [[ $COMP_WORDBREAKS == *=* ]]; then
				COMPREPLY=("${vals[@]}")
			else
				COMPREPLY=("${vals[@]/#/$want=}")
			fi
		done < <(_bgrun_params "$prog" "$playbook")
		return
	fi
	while IFS=$'\t' read -r name type choices; do
		[[ $given == *" $name "* ]] && continue
		[[ $name == "$cur"* ]] && COMPREPLY+=("$name=")
	done < <(_bgrun_params "$prog" "$playbook")
	compopt -o nospace 2>/dev/null
}

complete -F _bgrun bgrun
