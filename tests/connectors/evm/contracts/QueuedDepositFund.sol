// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

interface IQueuedOperator {
    event OperatorSet(address indexed controller, address indexed operator, bool approved);

    function setOperator(address operator, bool approved) external returns (bool);

    function isOperator(address controller, address operator) external view returns (bool status);
}

interface IQueuedDeposit {
    event DepositRequest(
        address indexed controller, address indexed owner, uint256 indexed requestId, address sender, uint256 assets
    );

    function requestDeposit(uint256 assets, address controller, address owner) external returns (uint256 requestId);

    function pendingDepositRequest(uint256 requestId, address controller) external view returns (uint256 pendingAssets);

    function claimableDepositRequest(uint256 requestId, address controller)
        external
        view
        returns (uint256 claimableAssets);

    function deposit(uint256 assets, address receiver, address controller) external returns (uint256 shares);

    function mint(uint256 shares, address receiver, address controller) external returns (uint256 assets);
}

/// @notice The mirror shape of ERC-7540: asynchronous subscriptions (queued, every request with its own
/// id from 100 on, fulfilled in any parts at the NAV of the moment, claimed by assets) and synchronous
/// ERC-4626 redemptions. ERC-165 declares async deposit and operators, not async redeem. An entry fee is
/// charged at fulfilment (`fulfilFeeBps`, fee-on-total of the assets accepted, paid to `feeRecipient` in
/// the fulfilment's transaction): the shares set aside for the claim are those of the rest, and the
/// claim's Deposit event shows the whole amount accepted.
contract QueuedDepositFund is ERC4626, Ownable, IQueuedOperator, IQueuedDeposit {
    using Math for uint256;

    struct Request {
        address controller;
        uint256 pendingAssets;
        uint256 claimableAssets;
        uint256 claimableShares;
    }

    uint256 public nextRequestId = 100;
    uint256 public fulfilFeeBps;
    address public feeRecipient;
    uint256 public totalPending; // stablecoin waiting: not the fund's yet
    mapping(uint256 => Request) public requests;
    mapping(address => uint256[]) private _requestsOf;
    mapping(address => uint256) private _claimableAssets;
    mapping(address => uint256) private _claimableShares;
    mapping(address => mapping(address => bool)) public isOperator;

    error AsyncDepositOnly();
    error ClaimByAssetsOnly();
    error ZeroAmount();
    error UnknownRequest(uint256 requestId);
    error ExceedsPending(uint256 requestId, uint256 requested, uint256 pending);
    error NotControllerOrOperator(address controller, address caller);

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address owner_)
        ERC20(name_, symbol_)
        ERC4626(asset_)
        Ownable(owner_)
    {}

    function _decimalsOffset() internal pure override returns (uint8) {
        return 12;
    }

    function supportsInterface(bytes4 interfaceId) external pure returns (bool) {
        return interfaceId == 0x01ffc9a7 || interfaceId == type(IQueuedDeposit).interfaceId
            || interfaceId == type(IQueuedOperator).interfaceId;
    }

    function totalAssets() public view override returns (uint256) {
        return IERC20(asset()).balanceOf(address(this)) - totalPending;
    }

    function setTotalAssets(uint256 target) external onlyOwner {
        uint256 held = totalAssets();
        if (target > held) {
            SafeERC20.safeTransferFrom(IERC20(asset()), msg.sender, address(this), target - held);
        } else if (target < held) {
            SafeERC20.safeTransfer(IERC20(asset()), msg.sender, held - target);
        }
    }

    function setFulfilmentFee(uint256 bps, address recipient) external onlyOwner {
        fulfilFeeBps = bps;
        feeRecipient = recipient;
    }

    function setOperator(address operator, bool approved) external returns (bool) {
        isOperator[msg.sender][operator] = approved;
        emit OperatorSet(msg.sender, operator, approved);
        return true;
    }

    function requestDeposit(uint256 assets, address controller, address owner) external returns (uint256 requestId) {
        if (owner != msg.sender && !isOperator[owner][msg.sender]) revert NotControllerOrOperator(owner, msg.sender);
        if (assets == 0) revert ZeroAmount();
        SafeERC20.safeTransferFrom(IERC20(asset()), owner, address(this), assets);
        totalPending += assets;
        requestId = nextRequestId++;
        requests[requestId] = Request(controller, assets, 0, 0);
        _requestsOf[controller].push(requestId);
        emit DepositRequest(controller, owner, requestId, msg.sender, assets);
    }

    function pendingDepositRequest(uint256 requestId, address controller) external view returns (uint256) {
        Request storage r = requests[requestId];
        return r.controller == controller ? r.pendingAssets : 0;
    }

    function claimableDepositRequest(uint256 requestId, address controller) external view returns (uint256) {
        Request storage r = requests[requestId];
        return r.controller == controller ? r.claimableAssets : 0;
    }

    /// @notice The manager accepts `assets` of request `requestId` at today's NAV, less the fee at fulfilment.
    function fulfillDeposit(uint256 requestId, uint256 assets) external onlyOwner returns (uint256 shares) {
        Request storage r = requests[requestId];
        if (r.controller == address(0)) revert UnknownRequest(requestId);
        if (assets == 0) revert ZeroAmount();
        if (assets > r.pendingAssets) revert ExceedsPending(requestId, assets, r.pendingAssets);
        uint256 fee = assets.mulDiv(fulfilFeeBps, fulfilFeeBps + 1e4, Math.Rounding.Ceil);
        shares = _convertToShares(assets - fee, Math.Rounding.Floor); // the NAV before these assets join
        r.pendingAssets -= assets;
        totalPending -= assets;
        r.claimableAssets += assets;
        r.claimableShares += shares;
        _claimableAssets[r.controller] += assets;
        _claimableShares[r.controller] += shares;
        _mint(address(this), shares);
        if (fee > 0) SafeERC20.safeTransfer(IERC20(asset()), feeRecipient, fee);
    }

    function maxDeposit(address controller) public view override returns (uint256) {
        return _claimableAssets[controller];
    }

    function maxMint(address controller) public view override returns (uint256) {
        return _claimableShares[controller];
    }

    function deposit(uint256 assets, address receiver) public override returns (uint256) {
        return deposit(assets, receiver, msg.sender);
    }

    function deposit(uint256 assets, address receiver, address controller) public returns (uint256 shares) {
        if (controller != msg.sender && !isOperator[controller][msg.sender]) {
            revert NotControllerOrOperator(controller, msg.sender);
        }
        uint256 maxAssets = _claimableAssets[controller];
        if (assets > maxAssets) revert ERC4626ExceededMaxDeposit(controller, assets, maxAssets);
        if (assets == 0) revert ZeroAmount();
        uint256 left = assets;
        uint256[] storage ids = _requestsOf[controller];
        for (uint256 i = 0; i < ids.length && left > 0; i++) {
            Request storage r = requests[ids[i]];
            if (r.claimableAssets == 0) continue;
            uint256 take = Math.min(left, r.claimableAssets);
            uint256 s = take == r.claimableAssets
                ? r.claimableShares
                : take.mulDiv(r.claimableShares, r.claimableAssets, Math.Rounding.Floor);
            r.claimableAssets -= take;
            r.claimableShares -= s;
            left -= take;
            shares += s;
        }
        _claimableAssets[controller] -= assets;
        _claimableShares[controller] -= shares;
        _transfer(address(this), receiver, shares);
        emit Deposit(controller, receiver, assets, shares);
    }

    function mint(uint256, address) public pure override returns (uint256) {
        revert ClaimByAssetsOnly();
    }

    function mint(uint256, address, address) public pure returns (uint256) {
        revert ClaimByAssetsOnly();
    }

    function previewDeposit(uint256) public pure override returns (uint256) {
        revert AsyncDepositOnly();
    }

    function previewMint(uint256) public pure override returns (uint256) {
        revert AsyncDepositOnly();
    }
}
