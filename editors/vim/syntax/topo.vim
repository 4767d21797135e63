" Vim syntax file
" Language: topo (lab topologies for topoc)
" Files:    *.topo
" The keywords are those of grammar/topo.lark; tests/test_editors.py checks that every
" keyword there is listed here.

if exists("b:current_syntax")
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

syn case match
syn iskeyword @,48-57,_,-

" A block or declaration keyword starts its line (so `mode external` is a mode).
syn match   topoBlock      "^\s*\zs\(network\|host\|vm\|external\|lab\)\>" nextgroup=topoName skipwhite
syn keyword topoStatement  forward expect mode bridge address subnet dhcp dns domain mtu stp
syn keyword topoStatement  nic route memory vcpus disk vni name connect masquerade nat6
syn keyword topoStatement  image kernel initrd cmdline user ssh-key ssh-key-file
syn keyword topoOption     on via to mac model gateway
syn match   topoModeValue  "\(\<mode\s\+\)\@<=\(isolated\|routed\|nat\|bridged\|open\|external\)\>"
syn match   topoName       "[A-Za-z_][A-Za-z0-9_-]*" contained
syn match   topoArrow      "!\?->"
" Numbers first: of two matches at one place the one defined last wins, and an address
" or a MAC starts like a number.
syn match   topoNumber     "\(^\|\s\)\zs-\?\d\+\([KMGT]i\?B\?\|B\)\?\>"
syn match   topoAddress    "\<\d\{1,3}\(\.\d\{1,3}\)\{3}\(/\d\{1,2}\)\?\>"
syn match   topoMac        "\<\x\x\([:-]\x\x\)\{5}\>"
" IPv6: eight groups, or fewer around one `::` (fd00:64::1/64, ::/0); after the MAC and
" the number, so that it wins where they start at the same place (2001:db8::...).
syn match   topoAddress    "\([0-9A-Za-z_.:]\)\@<!\(\(\x\{1,4}:\)\{7}\x\{1,4}\|\(\x\{1,4}\(:\x\{1,4}\)*\)\=::\(\x\{1,4}\(:\x\{1,4}\)*\)\=\)\(/\d\{1,3}\)\=[0-9A-Za-z_.:]\@!"
syn region  topoString     start=+"+ skip=+\\.+ end=+"\|$+ oneline
syn match   topoComment    "#.*$" contains=@Spell
syn match   topoBrace      "[{}]"

hi def link topoBlock      Structure
hi def link topoName       Identifier
hi def link topoStatement  Keyword
hi def link topoOption     Operator
hi def link topoModeValue  Constant
hi def link topoArrow      Operator
hi def link topoAddress    Number
hi def link topoMac        Number
hi def link topoNumber     Number
hi def link topoString     String
hi def link topoComment    Comment
hi def link topoBrace      Delimiter

let b:current_syntax = "topo"

let &cpo = s:cpo_save
unlet s:cpo_save
